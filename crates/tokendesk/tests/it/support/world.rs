//! A whole tokendesk on one machine, without HTTP in front: the Canvas simulator on port 0, a
//! fresh database, the service with a movable clock and the mailbox transport. Roles:
//! `ada.admin` approves, audits and administers; `theo.teacher` is the help desk.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokendesk::app::{App, AppParts, Ctx, Mailer, ManualClock, RoleBook};
use tokendesk::delivery::envelope::{self, AtRestKey, EnvelopeId, EnvelopeKey, Sealed};
use tokendesk::domain::request::RawNewRequest;
use tokendesk::domain::{Actor, Login, Policy, RequestId};
use tokendesk_canvas::CanvasClient;
use tokendesk_canvas_sim::{DEFAULT_ADMIN_TOKEN, RunningSim, SimConfig};

use super::db::TestDb;

pub struct World {
    pub sim: RunningSim,
    /// A Canvas client with the admin token tokendesk uses (to look at or change Canvas as a
    /// Canvas admin would).
    pub canvas: CanvasClient,
    pub db: TestDb,
    pub app: App,
    pub clock: Arc<ManualClock>,
}

pub fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

impl World {
    pub async fn new(db: TestDb) -> World {
        Self::with(
            db,
            SimConfig {
                throttle: None,
                ..Default::default()
            },
            Mailer::Mailbox,
            None,
        )
        .await
    }

    pub async fn with(
        db: TestDb,
        sim: SimConfig,
        mailer: Mailer,
        outbox_key: Option<AtRestKey>,
    ) -> World {
        Self::build(
            db,
            sim,
            mailer,
            outbox_key,
            "http://tokendesk.test/",
            |_| {},
        )
        .await
    }

    /// The default world with its service's parts changed by `tweak` (policy, roles, …).
    pub async fn tweaked(db: TestDb, tweak: impl FnOnce(&mut AppParts)) -> World {
        let sim = SimConfig {
            throttle: None,
            ..Default::default()
        };
        Self::build(
            db,
            sim,
            Mailer::Mailbox,
            None,
            "http://tokendesk.test/",
            tweak,
        )
        .await
    }

    /// A world with its own simulator settings and its service's parts changed by `tweak`.
    pub async fn custom(db: TestDb, sim: SimConfig, tweak: impl FnOnce(&mut AppParts)) -> World {
        Self::build(
            db,
            sim,
            Mailer::Mailbox,
            None,
            "http://tokendesk.test/",
            tweak,
        )
        .await
    }

    /// A world whose public URL is `https://tokendesk.test/` (as in production).
    pub async fn https(db: TestDb) -> World {
        let sim = SimConfig {
            throttle: None,
            ..Default::default()
        };
        Self::build(
            db,
            sim,
            Mailer::Mailbox,
            None,
            "https://tokendesk.test/",
            |_| {},
        )
        .await
    }

    async fn build(
        db: TestDb,
        sim: SimConfig,
        mailer: Mailer,
        outbox_key: Option<AtRestKey>,
        public_url: &str,
        tweak: impl FnOnce(&mut AppParts),
    ) -> World {
        let sim = tokendesk_canvas_sim::start(sim, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let canvas = CanvasClient::builder(sim.base_url(), SecretString::from(DEFAULT_ADMIN_TOKEN))
            .max_retries(1)
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::default());
        let set = |names: &[&str]| names.iter().map(|n| login(n)).collect();
        let mut parts = AppParts {
            store: db.store.clone(),
            policy: Policy::default(),
            roles: RoleBook {
                approvers: set(&["ada.admin"]),
                helpdesk: set(&["theo.teacher"]),
                auditors: set(&["ada.admin"]),
                admins: set(&["ada.admin"]),
            },
            canvas: canvas.clone(),
            canvas_url: sim.base_url().parse().unwrap(),
            canvas_user_pattern: tokendesk::domain::UserIdPattern::SisLogin,
            public_url: public_url.parse().unwrap(),
            mailer,
            outbox_key,
            product_name: "tokendesk".into(),
            // Most tests follow one request: its approvers hear of it at once. The digest
            // (the default, every 60 minutes) has tests of its own.
            notify: tokendesk::config::NotifyConfig {
                approver_digest_minutes: 0,
            },
            sessions: tokendesk::app::SessionRules::default(),
            fingerprint_key: Some(tokendesk::delivery::envelope::AtRestKey::generate()),
            clock: clock.clone(),
        };
        tweak(&mut parts);
        let app = App::new(parts);
        World {
            sim,
            canvas,
            db,
            app,
            clock,
        }
    }

    pub fn actor(&self, name: &str) -> Actor {
        self.app.actor(login(name))
    }

    pub fn today_plus(&self, days: i64) -> String {
        (self.app.now().date() + time::Duration::days(days)).to_string()
    }

    /// Records `who` as found in Canvas before (with a made-up Canvas id), so that submissions
    /// need no look-up: for seeding many people the simulator does not have.
    pub async fn known_person(&self, who: &str, canvas_id: i64) {
        let mut tx = self.db.store.write().await.unwrap();
        tokendesk::store::upsert_person(
            &mut tx,
            &tokendesk::store::Person {
                login: login(who),
                name: Some(who.to_owned()),
                email: Some(format!("{who}@example.edu")),
                canvas_user_id: Some(canvas_id),
            },
            self.app.now(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// `sam.student` asks for a token valid 30 days.
    pub async fn submit(&self, who: &str) -> RequestId {
        let raw = RawNewRequest {
            purpose: Some("grading scripts for my course sections".into()),
            expires_on: Some(self.today_plus(30)),
            application: Some("grader.py".into()),
        };
        self.app
            .submit(&self.actor(who), &raw, &Ctx::default())
            .await
            .unwrap()
            .id
    }

    /// Submit, approve and issue; returns the request id.
    pub async fn issued(&self, who: &str) -> RequestId {
        let id = self.submit(who).await;
        self.app
            .approve(&self.actor("ada.admin"), id, None, &Ctx::default())
            .await
            .unwrap();
        tokendesk::jobs::drain(&self.app).await.unwrap();
        id
    }

    /// The delivery link in the newest mailbox message to `who`: (envelope id, key).
    pub async fn link_for(&self, who: &str) -> (String, String) {
        let mail = self
            .app
            .mailbox(&self.actor("ada.admin"), Some(who), None)
            .await
            .unwrap();
        let message = mail
            .iter()
            .find(|m| m.text.contains("/e/"))
            .expect("a delivery email");
        let start = message
            .text
            .find("http://tokendesk.test/e/")
            .expect("the link");
        let link: String = message.text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        let (_, rest) = link.split_once("/e/").unwrap();
        let (id, key) = rest.split_once('#').unwrap();
        (
            id.to_owned(),
            key.trim_end_matches(['.', ',', ')', '>']).to_owned(),
        )
    }

    /// Reveals as `who` and decrypts with the key from the link, as the browser does.
    pub async fn reveal_value(&self, who: &str) -> String {
        let (id, key) = self.link_for(who).await;
        let (sealed, _) = self
            .app
            .reveal(&self.actor(who), &id, &Ctx::default())
            .await
            .unwrap();
        open(&id, &key, &sealed)
    }

    /// Calls `GET /api/v1/users/self` on the simulator with a token; returns the status.
    pub async fn canvas_status(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/api/v1/users/self", self.sim.base_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Activates a Canvas token the way its owner does, in the simulator's browser pages.
    pub async fn activate_in_canvas(&self, who: &str, canvas_token_id: i64) {
        use tokendesk_canvas_sim::browser;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = self.sim.base_url();
        let r = client
            .get(format!("{base}{}", browser::sign_in_path(who)))
            .send()
            .await
            .unwrap();
        // The session's cookies go back with the activation, its CSRF token as `X-CSRF-Token`.
        let session =
            browser::Session::from_set_cookies(r.headers().get_all("set-cookie")).unwrap();
        let r = client
            .post(format!(
                "{base}{}",
                browser::activation_path(canvas_token_id)
            ))
            .header("cookie", session.cookie_header())
            .header(browser::CSRF_HEADER, session.csrf_token())
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "activation in Canvas");
    }
}

pub fn open(id: &str, key: &str, sealed: &Sealed) -> String {
    use secrecy::ExposeSecret;
    let id = EnvelopeId::parse(id).unwrap();
    let key = EnvelopeKey::from_fragment(key).unwrap();
    envelope::open(&id, &key, sealed)
        .unwrap()
        .expose_secret()
        .to_owned()
}
