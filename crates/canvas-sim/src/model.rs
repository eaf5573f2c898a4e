//! The simulated Canvas data and its rules: people, tokens and who may do what with them
//! (`canvas-api.md` §1–§2, following `tokens_controller.rb` and `access_token.rb`).

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime};

use crate::errors::ApiError;
use crate::seed::{Seed, SeedSettings, SeedTokenState, SeedUser};
use crate::token::{generate_token_value, hash_value, hint_of, random_hex};

/// Canvas's lifetime cap for students creating their own tokens.
const STUDENT_MAX_LIFETIME: Duration = Duration::days(120);
/// `maximum_string_length` for the purpose column.
const PURPOSE_MAX: usize = 255;
/// `AccessToken#used!` moves `last_used_at` (and `updated_at`) at most this often.
const USED_THRESHOLD: Duration = Duration::minutes(10);
/// `SearchTermHelper::MIN_SEARCH_TERM_LENGTH` in current Canvas.
const MIN_SEARCH_TERM: usize = 2;

/// A person in the simulated Canvas: who the seed says they are (without the seed's tokens, which
/// live on as token records) and when they were created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct User {
    #[serde(flatten)]
    pub person: SeedUser,
    pub created_at: OffsetDateTime,
}

impl User {
    fn sortable_name(&self) -> String {
        let name = &self.person.name;
        match name.rsplit_once(' ') {
            Some((first, last)) => format!("{last}, {first}"),
            None => name.clone(),
        }
    }

    /// Canvas's `user_has_only_student_enrollments?`.
    fn only_student(&self) -> bool {
        let p = &self.person;
        !p.admin && !p.roles.is_empty() && p.roles.iter().all(|r| r == "student")
    }

    /// Whether the person may create and update tokens for themselves under the account settings.
    fn may_manage_own(&self, settings: &SeedSettings) -> bool {
        let p = &self.person;
        if p.admin {
            return true;
        }
        if settings.limit_personal_access_tokens {
            return false;
        }
        let student_like = p.roles.iter().all(|r| r == "student" || r == "observer");
        !(settings.restrict_personal_access_tokens_from_students && student_like)
    }

    /// `user_json` (`lib/api/v1/user.rb`): the SIS ids and the login only for an admin (who
    /// holds `read_sis` and `view_user_logins`), the email only when asked for and allowed
    /// (`read_email_addresses`) — `canvas-api.md` §2.
    pub fn json(&self, admin_view: bool, with_email: bool) -> Value {
        let p = &self.person;
        let mut json = json!({
            "id": p.id,
            "name": p.name,
            "created_at": iso(self.created_at),
            "sortable_name": self.sortable_name(),
            "short_name": p.name,
        });
        if let Value::Object(map) = &mut json {
            if admin_view {
                map.insert("sis_user_id".into(), json!(p.sis_user_id));
                map.insert("integration_id".into(), Value::Null);
                map.insert("sis_import_id".into(), Value::Null);
                map.insert("login_id".into(), json!(p.login_id));
            }
            if with_email {
                map.insert("email".into(), json!(p.email));
            }
        }
        json
    }

    /// Account search: SIS id, login, name, email (as substrings, any case) and the numeric id.
    fn matches(&self, term: &str) -> bool {
        let p = &self.person;
        let term = term.trim().to_lowercase();
        if term.parse::<u64>() == Ok(p.id) {
            return true;
        }
        [
            Some(&p.name),
            Some(&p.login_id),
            Some(&p.email),
            p.sis_user_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&term))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkflowState {
    Pending,
    Active,
    Deleted,
}

impl WorkflowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Pending => "pending",
            WorkflowState::Active => "active",
            WorkflowState::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub id: u64,
    pub user_id: u64,
    /// The real user when the token was made while masquerading (`as_user_id`).
    #[serde(default)]
    pub real_user_id: Option<u64>,
    pub purpose: String,
    /// Keyed hash of the value; the clear value is never stored.
    pub crypted: String,
    pub hint: String,
    pub state: WorkflowState,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

impl TokenRecord {
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at < now)
    }

    /// The token JSON of `lib/api/v1/token.rb`; `full_value` only right after create/regenerate.
    pub fn json(&self, full_value: Option<&str>, now: OffsetDateTime) -> Value {
        json!({
            "id": self.id,
            "user_id": self.user_id,
            "real_user_id": self.real_user_id,
            "purpose": self.purpose,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "expires_at": self.expires_at.map(iso),
            "last_used_at": self.last_used_at.map(iso),
            "workflow_state": self.state.as_str(),
            "scopes": self.scopes,
            "remember_access": null,
            "app_name": "User-Generated",
            "can_manually_regenerate": !self.expired(now),
            "visible_token": match full_value {
                Some(value) => value.to_owned(),
                None => format!("{}...", self.hint),
            },
        })
    }
}

/// Who is calling, once their token (or session) has been accepted: `user_id` is the user the
/// request acts as (Canvas's `@current_user`), `real_user_id` the one who signed in
/// (`logged_in_user`); they differ only while masquerading with `as_user_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub user_id: u64,
    pub real_user_id: u64,
}

impl Caller {
    pub fn new(user_id: u64) -> Caller {
        Caller {
            user_id,
            real_user_id: user_id,
        }
    }

    fn masquerading(self) -> bool {
        self.user_id != self.real_user_id
    }
}

/// A call on one person's tokens: who calls, whose tokens they are, the simulator's time, and
/// the status that answers "not allowed" (401, or 403 on newer instances).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenCall {
    pub caller: Caller,
    pub owner: u64,
    pub now: OffsetDateTime,
    pub deny: StatusCode,
}

impl TokenCall {
    /// Canvas answers "not allowed" to the token's owner and "not found" to anyone else.
    fn refuse(self) -> ApiError {
        if self.caller.user_id == self.owner {
            ApiError::Unauthorized(self.deny)
        } else {
            ApiError::NotFound
        }
    }
}

/// The `token[...]` parameters of a create or update call.
#[derive(Debug, Default)]
pub(crate) struct TokenParams {
    /// Whether any `token[...]` parameter was sent (`params.require(:token)`).
    pub present: bool,
    pub purpose: Option<String>,
    /// `Some("")` means "set to none".
    pub expires_at: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub regenerate: Option<String>,
}

/// All of the simulated Canvas's data.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Db {
    hash_key: String,
    pub settings: SeedSettings,
    pub users: BTreeMap<u64, User>,
    pub tokens: BTreeMap<u64, TokenRecord>,
    next_token_id: u64,
    #[serde(skip)]
    by_hash: HashMap<String, u64>,
}

impl Db {
    pub fn from_seed(seed: &Seed, now: OffsetDateTime) -> Db {
        let mut db = Db {
            hash_key: random_hex(32),
            settings: seed.settings.clone(),
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_token_id: 1,
            by_hash: HashMap::new(),
        };
        for u in &seed.users {
            let person = SeedUser {
                tokens: Vec::new(),
                ..u.clone()
            };
            db.users.insert(
                u.id,
                User {
                    person,
                    created_at: now,
                },
            );
            for t in &u.tokens {
                let state = match t.state {
                    SeedTokenState::Pending => WorkflowState::Pending,
                    SeedTokenState::Active => WorkflowState::Active,
                    SeedTokenState::Deleted => WorkflowState::Deleted,
                };
                let mut record = db.new_record(u.id, t.purpose.clone(), t.expires_at, now);
                record.state = state;
                db.store(record, &t.value);
            }
        }
        db
    }

    /// Rebuilds the value index after loading from a state file.
    pub fn reindex(&mut self) {
        self.by_hash = self
            .tokens
            .values()
            .map(|t| (t.crypted.clone(), t.id))
            .collect();
    }

    fn new_record(
        &mut self,
        user_id: u64,
        purpose: String,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> TokenRecord {
        let id = self.next_token_id;
        self.next_token_id += 1;
        TokenRecord {
            id,
            user_id,
            real_user_id: None,
            purpose,
            crypted: String::new(),
            hint: String::new(),
            state: WorkflowState::Active,
            scopes: Vec::new(),
            created_at: now,
            updated_at: now,
            expires_at,
            last_used_at: None,
        }
    }

    /// Gives the record a (new) value and stores it; only the hash is kept.
    fn store(&mut self, mut record: TokenRecord, value: &str) -> TokenRecord {
        if !record.crypted.is_empty() {
            self.by_hash.remove(&record.crypted);
        }
        record.crypted = hash_value(&self.hash_key, value);
        record.hint = hint_of(value);
        self.by_hash.insert(record.crypted.clone(), record.id);
        self.tokens.insert(record.id, record.clone());
        record
    }

    /// `AccessToken.authenticate` + `usable?` (`canvas-api.md` §3): a deleted token is
    /// "Revoked", a pending or unknown one "Invalid", an expired one "Expired". Then `used!`
    /// moves `last_used_at` and `updated_at`, at most once every 10 minutes (§2). Returns the
    /// owner and whether the token record changed.
    pub fn authenticate(
        &mut self,
        value: &str,
        now: OffsetDateTime,
    ) -> Result<(u64, bool), ApiError> {
        let hash = hash_value(&self.hash_key, value);
        let token = self
            .by_hash
            .get(&hash)
            .and_then(|id| self.tokens.get_mut(id))
            .ok_or(ApiError::InvalidToken)?;
        match token.state {
            WorkflowState::Deleted => return Err(ApiError::RevokedToken),
            WorkflowState::Pending => return Err(ApiError::InvalidToken),
            WorkflowState::Active => {}
        }
        if let Some(at) = token.expires_at.filter(|at| *at < now) {
            return Err(ApiError::ExpiredToken {
                expired_at: iso(at),
            });
        }
        let used = token
            .last_used_at
            .is_none_or(|at| now - at >= USED_THRESHOLD);
        if used {
            token.last_used_at = Some(now);
            token.updated_at = now;
        }
        Ok((token.user_id, used))
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    /// The person with this login, in any case (logins are unique without regard to case).
    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        let login = login.to_lowercase();
        self.users
            .values()
            .find(|u| u.person.login_id.to_lowercase() == login)
    }

    fn is_admin(&self, user_id: u64) -> bool {
        self.user(user_id).is_some_and(|u| u.person.admin)
    }

    /// `User#can_masquerade?`: oneself, or anyone for an admin (who holds `become_user`).
    pub fn may_act_as(&self, real_user_id: u64, user_id: u64) -> bool {
        real_user_id == user_id || self.is_admin(real_user_id)
    }

    /// Resolves `:user_id` the way `api_find` does (`canvas-api.md` §2): `self` (the user `me`),
    /// a numeric id, `sis_user_id:X`, `sis_login_id:X` (any case), each also as
    /// `hex:sis_…:<hex>`.
    pub fn resolve_user(&self, me: u64, reference: &str) -> Result<u64, ApiError> {
        let reference = reference.trim();
        let found = if reference == "self" {
            self.user(me)
        } else if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_digit()) {
            reference.parse::<u64>().ok().and_then(|id| self.user(id))
        } else {
            match sis_reference(reference) {
                Some(("sis_user_id", sis)) => self
                    .users
                    .values()
                    .find(|u| u.person.sis_user_id.as_deref() == Some(sis.as_str())),
                Some(("sis_login_id", login)) => self.user_by_login(&login),
                _ => None,
            }
        };
        found.map(|u| u.person.id).ok_or(ApiError::NotFound)
    }

    /// `GET /api/v1/users/:id`: one's own profile, or anyone's for an admin. A person the caller
    /// may not see is not found (`users_controller.rb#api_show` raises `RecordNotFound`).
    pub fn show_user(&self, caller: Caller, user_id: u64) -> Result<Value, ApiError> {
        let admin = self.is_admin(caller.user_id);
        if caller.user_id != user_id && !admin {
            return Err(ApiError::NotFound);
        }
        let user = self.user(user_id).ok_or(ApiError::NotFound)?;
        let mut json = user.json(admin, admin);
        if let Value::Object(map) = &mut json {
            map.insert("locale".into(), Value::Null);
            map.insert(
                "permissions".into(),
                json!({"can_update_name": true, "can_update_avatar": false}),
            );
        }
        Ok(json)
    }

    /// `GET /api/v1/accounts/1`: the root account, for admins.
    pub fn account_json(&self, caller: Caller, deny: StatusCode) -> Result<Value, ApiError> {
        if !self.is_admin(caller.user_id) {
            return Err(ApiError::Unauthorized(deny));
        }
        Ok(json!({
            "id": 1,
            "name": "Simulated University",
            "uuid": "canvas-sim-root-account",
            "parent_account_id": null,
            "root_account_id": null,
            "workflow_state": "active",
            "default_time_zone": "Etc/UTC",
        }))
    }

    /// `GET /api/v1/accounts/:id/users?search_term=`: admins only, sorted by sortable name
    /// (`canvas-api.md` §2). A blank term lists everyone; a shorter term than 2 characters is
    /// Canvas's 400; `email` only with `include[]=email`.
    pub fn search_users(
        &self,
        caller: Caller,
        term: Option<&str>,
        include_email: bool,
        deny: StatusCode,
    ) -> Result<Vec<Value>, ApiError> {
        if !self.is_admin(caller.user_id) {
            return Err(ApiError::Unauthorized(deny));
        }
        let term = term.unwrap_or("");
        let everyone = term.trim().is_empty();
        if !everyone && term.chars().count() < MIN_SEARCH_TERM {
            return Err(ApiError::BadRequestBody(json!({"errors": [{
                "field": "search_term",
                "code": "invalid",
                "message": format!("{MIN_SEARCH_TERM} or more characters is required"),
            }]})));
        }
        let mut users: Vec<&User> = self
            .users
            .values()
            .filter(|u| everyone || u.matches(term))
            .collect();
        users.sort_by_key(|u| (u.sortable_name().to_lowercase(), u.person.id));
        Ok(users
            .into_iter()
            .map(|u| u.json(true, include_email))
            .collect())
    }

    /// `find_token`: a 5-character hint first, then a numeric id, among `user_id`'s
    /// `access_tokens` — the active and pending ones only, so a deleted token is not found
    /// (`canvas-api.md` §2).
    fn find_token(&self, user_id: u64, id: &str) -> Result<u64, ApiError> {
        let mut mine = self
            .tokens
            .values()
            .filter(|t| t.user_id == user_id && t.state != WorkflowState::Deleted);
        let by_hint = if id.chars().count() == crate::token::HINT_LENGTH {
            mine.clone().find(|t| t.hint == id)
        } else {
            None
        };
        by_hint
            .or_else(|| {
                id.parse::<u64>()
                    .ok()
                    .and_then(|n| mine.find(|t| t.id == n))
            })
            .map(|t| t.id)
            .ok_or(ApiError::NotFound)
    }

    fn may_write(&self, user_id: u64, owner: u64) -> bool {
        self.is_admin(user_id)
            || (user_id == owner
                && self
                    .user(owner)
                    .is_some_and(|u| u.may_manage_own(&self.settings)))
    }

    fn may_read(&self, user_id: u64, owner: u64) -> bool {
        user_id == owner || self.is_admin(user_id)
    }

    /// `POST /api/v1/users/:user_id/tokens`. The student limit is checked against the user the
    /// request acts as, the permission against the real user; the token is pending unless it is
    /// the real user's own.
    pub fn create_token(
        &mut self,
        call: TokenCall,
        params: TokenParams,
    ) -> Result<Value, ApiError> {
        let TokenCall {
            caller,
            owner,
            now,
            deny,
        } = call;
        if !params.present {
            return Err(token_missing());
        }
        let Some(purpose) = params.purpose else {
            return Err(ApiError::BadRequest("token[purpose] is missing".into()));
        };
        let current = self.user(caller.user_id).ok_or(ApiError::InvalidToken)?;
        // Canvas holds the *calling* user to the student limit, and only there refuses a date
        // it cannot read (canvas-api.md §1, §2).
        if current.only_student() {
            let Some(raw) = params.expires_at.as_deref().filter(|r| !r.is_empty()) else {
                return Err(ApiError::BadRequest("Expiration date is required".into()));
            };
            let at = parse_time(raw).ok_or_else(invalid_date)?;
            if at > now + STUDENT_MAX_LIFETIME {
                return Err(ApiError::BadRequest(
                    "Expiration date cannot be more than 120 days in the future".into(),
                ));
            }
        }
        // Elsewhere the model casts it: what it cannot read becomes "no expiry".
        let expires_at = params.expires_at.as_deref().and_then(parse_time);
        if !self.may_write(caller.real_user_id, owner) {
            return Err(ApiError::Unauthorized(deny));
        }
        validate_purpose(&purpose)?;
        let mut record = self.new_record(owner, purpose, expires_at, now);
        record.scopes = params.scopes.unwrap_or_default();
        if caller.real_user_id != owner {
            record.state = WorkflowState::Pending;
        }
        if caller.masquerading() {
            record.real_user_id = Some(caller.real_user_id);
        }
        let value = generate_token_value();
        let record = self.store(record, &value);
        Ok(record.json(Some(&value), now))
    }

    /// `GET /api/v1/users/:user_id/tokens/:id`.
    pub fn show_token(&self, call: TokenCall, id: &str) -> Result<Value, ApiError> {
        let id = self.find_token(call.owner, id)?;
        if !self.may_read(call.caller.user_id, call.owner) {
            return Err(ApiError::Unauthorized(call.deny));
        }
        self.tokens
            .get(&id)
            .map(|t| t.json(None, call.now))
            .ok_or(ApiError::NotFound)
    }

    /// `PUT /api/v1/users/:user_id/tokens/:id`. An `expires_at` the model cannot read clears the
    /// expiry (§2).
    pub fn update_token(
        &mut self,
        call: TokenCall,
        id: &str,
        params: TokenParams,
    ) -> Result<Value, ApiError> {
        let TokenCall {
            caller, owner, now, ..
        } = call;
        let id = self.find_token(owner, id)?;
        if !self.may_write(caller.real_user_id, owner) {
            return Err(call.refuse());
        }
        if !params.present {
            return Err(token_missing());
        }
        let mut record = self.tokens.get(&id).cloned().ok_or(ApiError::NotFound)?;
        let new_expiry = params.expires_at.as_deref().map(parse_time);
        let regenerate = params.regenerate.as_deref().is_some_and(truthy);
        if regenerate && record.expired(now) && new_expiry.is_none() {
            return Err(ApiError::BadRequestBody(json!({"errors": {
                "message": "cannot regenerate an expired token without a new expiration date"
            }})));
        }
        if let Some(purpose) = params.purpose {
            validate_purpose(&purpose)?;
            record.purpose = purpose;
        }
        if let Some(expiry) = new_expiry {
            record.expires_at = expiry;
        }
        if let Some(scopes) = params.scopes {
            record.scopes = scopes;
        }
        record.updated_at = now;
        if regenerate {
            if caller.real_user_id != owner {
                record.state = WorkflowState::Pending;
            }
            let value = generate_token_value();
            let record = self.store(record, &value);
            return Ok(record.json(Some(&value), now));
        }
        self.tokens.insert(id, record.clone());
        Ok(record.json(None, now))
    }

    /// `DELETE /api/v1/users/:user_id/tokens/:id`: a soft delete that stops the token at once.
    /// A deleted token is no longer found, so deleting it again is a 404.
    pub fn delete_token(&mut self, call: TokenCall, id: &str) -> Result<Value, ApiError> {
        let id = self.find_token(call.owner, id)?;
        if !self.may_read(call.caller.real_user_id, call.owner) {
            return Err(call.refuse());
        }
        let record = self.tokens.get_mut(&id).ok_or(ApiError::NotFound)?;
        record.state = WorkflowState::Deleted;
        record.updated_at = call.now;
        Ok(record.json(None, call.now))
    }

    /// `GET /api/v1/users/:user_id/user_generated_tokens`: the active and pending tokens
    /// (expired ones too, deleted ones never), oldest first (`created_at`, `id`).
    pub fn user_generated_tokens(&self, call: TokenCall) -> Result<Vec<&TokenRecord>, ApiError> {
        if !self.may_read(call.caller.user_id, call.owner) {
            return Err(ApiError::Unauthorized(call.deny));
        }
        let mut tokens: Vec<&TokenRecord> = self
            .tokens
            .values()
            .filter(|t| t.user_id == call.owner && t.state != WorkflowState::Deleted)
            .collect();
        tokens.sort_by_key(|t| (t.created_at, t.id));
        Ok(tokens)
    }

    /// `POST /profile/tokens/:id/activate`, for the signed-in owner only.
    pub fn activate(
        &mut self,
        user_id: u64,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        let id = self.find_token(user_id, id)?;
        let record = self.tokens.get_mut(&id).ok_or(ApiError::NotFound)?;
        if record.state != WorkflowState::Pending {
            return Err(ApiError::BadRequestBody(
                json!({"errors": {"token": ["is already active"]}}),
            ));
        }
        record.state = WorkflowState::Active;
        record.updated_at = now;
        Ok(record.json(None, now))
    }

    pub fn tokens_of(&self, user_id: u64) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values().filter(move |t| t.user_id == user_id)
    }
}

/// `params.require(:token)` failing, as Canvas renders it (`canvas-api.md` §2).
fn token_missing() -> ApiError {
    ApiError::BadRequestBody(json!({"errors": [{"message": "token is missing"}]}))
}

/// `sis_user_id:X` or `hex:sis_user_id:<hex>` → `("sis_user_id", "X")` (`Api.sis_parse_id`).
fn sis_reference(reference: &str) -> Option<(&str, String)> {
    if let Some(rest) = reference.strip_prefix("hex:") {
        let (column, hex) = rest.split_once(':')?;
        if !column.starts_with("sis_") || hex.is_empty() || hex.len() % 2 != 0 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect();
        return Some((column, String::from_utf8(bytes?).ok()?));
    }
    let (column, value) = reference.split_once(':')?;
    (column.starts_with("sis_") && !value.is_empty()).then(|| (column, value.to_owned()))
}

fn invalid_date() -> ApiError {
    ApiError::BadRequest("Invalid expiration date format".into())
}

fn validate_purpose(purpose: &str) -> Result<(), ApiError> {
    if purpose.is_empty() {
        return Err(ApiError::Validation {
            attribute: "purpose",
            kind: "too_short",
        });
    }
    if purpose.chars().count() > PURPOSE_MAX {
        return Err(ApiError::Validation {
            attribute: "purpose",
            kind: "too_long",
        });
    }
    Ok(())
}

/// `Canvas::Plugin.value_to_boolean`.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "t" | "yes" | "y" | "on"
    )
}

/// ISO-8601 in UTC with whole seconds, as Canvas's JSON has it.
pub(crate) fn iso(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// `Time.zone.parse` for the forms a client sends: RFC 3339, a date-time without offset (UTC),
/// or a date (midnight UTC).
pub(crate) fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    let raw = raw.trim();
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t.to_offset(time::UtcOffset::UTC));
    }
    let local = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(t) = PrimitiveDateTime::parse(raw, &local) {
        return Some(t.assume_utc());
    }
    let date = format_description!("[year]-[month]-[day]");
    Date::parse(raw, &date)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_canvas_forms() {
        assert_eq!(
            iso(parse_time("2030-01-02T03:04:05Z").unwrap()),
            "2030-01-02T03:04:05Z"
        );
        assert_eq!(
            iso(parse_time("2030-01-02T03:04:05+02:00").unwrap()),
            "2030-01-02T01:04:05Z"
        );
        assert_eq!(
            iso(parse_time("2030-01-02T03:04:05").unwrap()),
            "2030-01-02T03:04:05Z"
        );
        assert_eq!(
            iso(parse_time("2030-01-02").unwrap()),
            "2030-01-02T00:00:00Z"
        );
        assert!(parse_time("next week").is_none());
        assert!(parse_time("2030-13-01").is_none());
    }
}
