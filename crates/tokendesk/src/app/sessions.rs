//! Signing in to tokendesk itself: sessions (OIDC and demo) with idle and absolute timeouts,
//! the OIDC sign-ins under way, and service keys for automation. A session's id and a key's
//! value are random, shown once (a cookie, the CLI's output) and stored only as SHA-256 hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{App, AppResult, Ctx};
use crate::domain::{Actor, AuditRecord, DomainError, Login, Roles};
use crate::store::{self, NewSession, OidcFlow, StoreError, StoredKey, StoredSession};

/// How long sessions last (`auth.session_idle_minutes`, `auth.session_max_hours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRules {
    /// A session unused this long ends.
    pub idle_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub max_secs: i64,
}

impl Default for SessionRules {
    /// The defaults of `auth.session_idle_minutes` and `auth.session_max_hours`.
    fn default() -> Self {
        SessionRules::from_config(&crate::config::AuthConfig::default())
    }
}

impl SessionRules {
    pub fn from_config(auth: &crate::config::AuthConfig) -> SessionRules {
        SessionRules {
            idle_secs: auth.session_idle_secs(),
            max_secs: auth.session_max_secs(),
        }
    }
}

/// How a session began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Oidc,
    Demo,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Oidc => "oidc",
            SessionKind::Demo => "demo",
        }
    }
}

/// A sign-in to turn into a session.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub login: Login,
    pub kind: SessionKind,
    /// Roles from the identity provider's groups (on top of `[roles]`).
    pub roles: Roles,
    pub email: Option<String>,
    pub name: Option<String>,
    pub id_token: Option<String>,
    pub user_agent: Option<String>,
}

/// A live session, as a request presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub login: Login,
    /// Roles from the identity provider's groups.
    pub roles: Roles,
    pub public_id: String,
    pub kind: String,
    pub id_token: Option<String>,
}

/// A session seen again is noted at most this often (the idle timeout counts in minutes).
const TOUCH_EVERY_SECS: i64 = 60;
/// An OIDC sign-in must come back from the provider within this long.
pub const OIDC_FLOW_SECS: i64 = 10 * 60;

/// SHA-256, hex: how session ids, states and keys are stored.
pub fn secret_hash(value: &str) -> String {
    crate::domain::hex(&Sha256::digest(value.as_bytes()))
}

/// `bytes` random bytes, base64url.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// What begins every service key's value.
pub const KEY_PREFIX: &str = "tdk_";

/// The roles a service key may have.
pub const KEY_ROLES: &[&str] = &["auditor", "helpdesk"];

/// Why a bearer key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Expired { name: String, at: OffsetDateTime },
    Revoked { name: String, at: OffsetDateTime },
}

/// A key just made: its value is shown once.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: i64,
    pub value: String,
    pub key: StoredKey,
}

fn session_target(login: &Login) -> String {
    format!("person:{login}")
}

impl App {
    /// Starts a session for a sign-in: a fresh random id every time (a session id known before
    /// sign-in is never the one after). Returns the cookie's value.
    pub async fn start_session(&self, sign_in: &SignIn, ctx: &Ctx) -> AppResult<String> {
        let rules = self.parts().sessions;
        let now = self.now();
        let cookie = random_secret(32);
        let id_hash = secret_hash(&cookie);
        let public_id = random_secret(9);
        let roles = sign_in.roles.held_names();
        let mut tx = self.write().await?;
        store::upsert_person(
            &mut tx,
            &store::Person {
                login: sign_in.login.clone(),
                name: sign_in.name.clone(),
                email: sign_in.email.clone(),
                canvas_user_id: None,
            },
            now,
        )
        .await?;
        store::insert_session(
            &mut tx,
            &NewSession {
                id_hash: &id_hash,
                public_id: &public_id,
                login: &sign_in.login,
                kind: sign_in.kind.as_str(),
                roles: &roles,
                id_token: sign_in.id_token.as_deref(),
                client_addr: ctx.client_addr.as_deref(),
                user_agent: sign_in.user_agent.as_deref(),
                now,
                expires_at: now + Duration::seconds(rules.max_secs),
            },
        )
        .await?;
        let record = AuditRecord {
            actor: sign_in.login.to_string(),
            action: "session.start",
            target: session_target(&sign_in.login),
            outcome: "ok",
            details: json!({
                "session": public_id,
                "kind": sign_in.kind.as_str(),
                "roles_from_groups": roles,
            }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(login = %sign_in.login, kind = sign_in.kind.as_str(), session = %public_id, "signed in");
        Ok(cookie)
    }

    /// The live session a cookie names: not ended, not past its absolute lifetime, not idle
    /// longer than allowed. Notes the use (at most once a minute).
    pub async fn session(&self, cookie: &str) -> AppResult<Option<LiveSession>> {
        let rules = self.parts().sessions;
        if cookie.is_empty() || cookie.len() > 100 {
            return Ok(None);
        }
        let now = self.now();
        let id_hash = secret_hash(cookie);
        let mut conn = self.read().await?;
        let Some(s) = store::session_by_hash(&mut conn, &id_hash).await? else {
            return Ok(None);
        };
        if !is_live(&s, now, rules) {
            return Ok(None);
        }
        drop(conn);
        if (now - s.last_seen_at).whole_seconds() >= TOUCH_EVERY_SECS {
            let mut tx = self.write().await?;
            store::touch_session(&mut tx, &id_hash, now).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(Some(LiveSession {
            login: s.login,
            roles: Roles::from_names(&s.roles),
            public_id: s.public_id,
            kind: s.kind,
            id_token: s.id_token,
        }))
    }

    /// Signs out the session a cookie names; returns it (its ID token leads to the provider's
    /// sign-out) when it was live.
    pub async fn end_session(&self, cookie: &str, ctx: &Ctx) -> AppResult<Option<StoredSession>> {
        let now = self.now();
        let id_hash = secret_hash(cookie);
        let mut tx = self.write().await?;
        let Some(s) = store::session_by_hash(&mut tx, &id_hash).await? else {
            return Ok(None);
        };
        let login = s.login.to_string();
        if !store::end_session_by_hash(&mut tx, &id_hash, now, &login).await? {
            return Ok(None);
        }
        let record = AuditRecord {
            actor: login,
            action: "session.end",
            target: session_target(&s.login),
            outcome: "ok",
            details: json!({ "session": s.public_id, "why": "signed out" }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(s))
    }

    /// The live sessions of `login`: one's own, or anyone's for the help desk.
    pub async fn sessions_of(&self, actor: &Actor, login: &Login) -> AppResult<Vec<StoredSession>> {
        let rules = self.parts().sessions;
        if !actor.is(login) && !actor.roles.can_support() {
            return Err(DomainError::NotFound.into());
        }
        let now = self.now();
        let mut conn = self.read().await?;
        Ok(store::live_sessions_of(
            &mut conn,
            login,
            now,
            now - Duration::seconds(rules.idle_secs),
        )
        .await?)
    }

    /// Ends one of the actor's own sessions, named by its public id.
    pub async fn end_own_session(
        &self,
        actor: &Actor,
        public_id: &str,
        ctx: &Ctx,
    ) -> AppResult<()> {
        let now = self.now();
        let mut tx = self.write().await?;
        if !store::end_session_of(&mut tx, &actor.login, public_id, now, actor.login.as_str())
            .await?
        {
            return Err(DomainError::NotFound.into());
        }
        let record = AuditRecord {
            actor: actor.login.to_string(),
            action: "session.end",
            target: session_target(&actor.login),
            outcome: "ok",
            details: json!({ "session": public_id, "why": "ended by its owner" }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Ends every session of `login` (the help desk, an admin, or the person themselves):
    /// they must sign in again everywhere. How many were open.
    pub async fn end_all_sessions(
        &self,
        actor: &Actor,
        login: &Login,
        ctx: &Ctx,
    ) -> AppResult<u64> {
        if !actor.is(login) && !actor.roles.can_support() {
            if !actor.roles.can_look_up_people() {
                return Err(DomainError::NotFound.into());
            }
            return Err(DomainError::Forbidden(
                "only the help desk can end other people's sessions".into(),
            )
            .into());
        }
        let now = self.now();
        let mut tx = self.write().await?;
        let ended = store::end_sessions_of(&mut tx, login, now, actor.login.as_str()).await?;
        let record = AuditRecord {
            actor: actor.login.to_string(),
            action: "session.end_all",
            target: session_target(login),
            outcome: "ok",
            details: json!({ "ended": ended }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ended)
    }

    /// Deletes ended and expired sessions and stale OIDC sign-ins (the sweep).
    pub async fn purge_sessions(&self) -> AppResult<u64> {
        let rules = self.parts().sessions;
        let now = self.now();
        let mut tx = self.write().await?;
        let purged = store::purge_sessions(
            &mut tx,
            now,
            now - Duration::seconds(rules.idle_secs),
            now - Duration::seconds(OIDC_FLOW_SECS),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(purged)
    }

    // ---- OIDC sign-ins under way ----------------------------------------------------------------

    /// Remembers an OIDC sign-in until the provider answers (keyed by its state's hash).
    pub async fn begin_oidc(&self, state: &str, flow: &OidcFlow) -> AppResult<()> {
        let mut tx = self.write().await?;
        store::insert_flow(&mut tx, &secret_hash(state), flow).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Takes the OIDC sign-in of `state` (once): `None` for an unknown, used or stale state.
    pub async fn take_oidc(&self, state: &str) -> AppResult<Option<OidcFlow>> {
        let now = self.now();
        let mut tx = self.write().await?;
        let flow = store::take_flow(&mut tx, &secret_hash(state)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(flow.filter(|f| (now - f.created_at).whole_seconds() <= OIDC_FLOW_SECS))
    }

    // ---- service keys ---------------------------------------------------------------------------

    /// Makes a service key (the CLI). Its value is returned once and stored only as a hash.
    pub async fn create_key(
        &self,
        name: &str,
        role: &str,
        valid_for: Duration,
        ctx: &Ctx,
    ) -> AppResult<NewKey> {
        let mut errors = Vec::new();
        if let Err(e) = check_key_name(name) {
            errors.push(crate::domain::FieldError::new("name", "invalid", e));
        }
        if !KEY_ROLES.contains(&role) {
            errors.push(crate::domain::FieldError::new(
                "role",
                "invalid",
                format!(
                    "`{role}` is not a role a key can have; use one of {}",
                    KEY_ROLES.join(", ")
                ),
            ));
        }
        if valid_for <= Duration::ZERO || valid_for > Duration::days(366) {
            errors.push(crate::domain::FieldError::new(
                "expires_in",
                "out_of_range",
                "a key lasts between a minute and 366 days (e.g. 90d)",
            ));
        }
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors).into());
        }
        let now = self.now();
        let value = format!("{KEY_PREFIX}{}", random_secret(32));
        let mut tx = self.write().await?;
        let id = store::insert_key(
            &mut tx,
            name,
            role,
            &secret_hash(&value),
            "cli",
            now,
            now + valid_for,
        )
        .await?
        .ok_or_else(|| DomainError::Conflict {
            code: "exists",
            message: format!("a key named `{name}` exists; revoke it or choose another name"),
        })?;
        let record = AuditRecord {
            actor: "system".into(),
            action: "key.create",
            target: format!("key:{name}"),
            outcome: "ok",
            details: json!({ "id": id, "role": role, "expires_at": (now + valid_for).unix_timestamp() }),
        };
        self.audit(&mut tx, &record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let key = StoredKey {
            id,
            name: name.to_owned(),
            role: role.to_owned(),
            created_by: "cli".into(),
            created_at: now,
            expires_at: now + valid_for,
            revoked_at: None,
            last_used_at: None,
        };
        Ok(NewKey { id, value, key })
    }

    /// Every service key (never their values).
    pub async fn keys(&self) -> AppResult<Vec<StoredKey>> {
        let mut conn = self.read().await?;
        Ok(store::list_keys(&mut conn).await?)
    }

    /// Revokes a service key; `Ok(false)` when it was revoked before.
    pub async fn revoke_key(&self, id: i64, ctx: &Ctx) -> AppResult<bool> {
        let now = self.now();
        let mut tx = self.write().await?;
        let revoked = store::revoke_key(&mut tx, id, now)
            .await?
            .ok_or(DomainError::NotFound)?;
        if revoked {
            let record = AuditRecord {
                actor: "system".into(),
                action: "key.revoke",
                target: format!("key-id:{id}"),
                outcome: "ok",
                details: json!({ "id": id }),
            };
            self.audit(&mut tx, &record, ctx).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(revoked)
    }

    /// The actor a bearer key stands for: `key:NAME` with exactly the key's role.
    pub async fn key_actor(&self, value: &str) -> AppResult<Result<Actor, KeyRefusal>> {
        if !value.starts_with(KEY_PREFIX) || value.len() > 100 {
            return Ok(Err(KeyRefusal::Unknown));
        }
        let now = self.now();
        let mut conn = self.read().await?;
        let Some(key) = store::key_by_hash(&mut conn, &secret_hash(value)).await? else {
            return Ok(Err(KeyRefusal::Unknown));
        };
        if let Some(at) = key.revoked_at {
            return Ok(Err(KeyRefusal::Revoked { name: key.name, at }));
        }
        if key.expires_at <= now {
            return Ok(Err(KeyRefusal::Expired {
                name: key.name,
                at: key.expires_at,
            }));
        }
        drop(conn);
        if key
            .last_used_at
            .is_none_or(|t| (now - t).whole_seconds() >= TOUCH_EVERY_SECS)
        {
            let mut tx = self.write().await?;
            store::touch_key(&mut tx, key.id, now).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(Ok(Actor {
            login: Login::service_key(&key.name),
            roles: Roles::from_names(&key.role),
        }))
    }
}

fn is_live(s: &StoredSession, now: OffsetDateTime, rules: SessionRules) -> bool {
    s.ended_at.is_none()
        && s.expires_at > now
        && (now - s.last_seen_at).whole_seconds() < rules.idle_secs
        && (now - s.created_at).whole_seconds() < rules.max_secs
}

/// A key's name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_key_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a key name: use 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (e.g. nightly-audit-export)",
            name.escape_default()
        ))
    }
}

/// `90d`, `12h`, `30m`: how long a key lasts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{}` is not a duration: write a number and a unit, e.g. 90d, 12h or 30m",
            text.escape_default()
        )
    };
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n > 100_000 {
        return Err(bad());
    }
    match unit {
        "d" => Ok(Duration::days(n)),
        "h" => Ok(Duration::hours(n)),
        "m" => Ok(Duration::minutes(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_names() {
        assert_eq!(parse_duration("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_duration("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse_duration("30m").unwrap(), Duration::minutes(30));
        for bad in ["", "d", "90", "90w", "-1d", "1.5d", "999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(check_key_name("nightly-audit.export_1").is_ok());
        for bad in ["", "-x", "Upper", "a b", "a/b", &"a".repeat(65)] {
            assert!(check_key_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (random_secret(32), random_secret(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
