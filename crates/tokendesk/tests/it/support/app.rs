//! tokendesk over HTTP: a [`World`] (simulator, fresh database, app with a movable clock and the
//! mailbox) with the web router served on 127.0.0.1:0, and a small client that signs in with
//! `X-Remote-User` (trusted-header auth trusting loopback by default).

use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokendesk::app::App;
use tokendesk::config::AuthConfig;
use tokendesk::domain::Login;
use tokendesk::web::{WebAuth, WebOptions, router_with};
use tokio::task::JoinHandle;

use super::db::TestDb;
use super::openapi::Contract;
use super::world::World;

/// The router serving on loopback.
pub struct Server {
    pub base: String,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on 127.0.0.1:0; `listen` is what the web layer is told its listen address is
/// (`None`: the real one).
pub async fn serve(
    app: App,
    auth: AuthConfig,
    demo_people: Vec<(Login, String)>,
    listen: Option<SocketAddr>,
    options: WebOptions,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web_auth = WebAuth::new(&auth, listen.unwrap_or(addr), demo_people).unwrap();
    let http = tokendesk::server::HttpOptions::from_limits(&options.limits);
    serve_router(listener, router_with(app, web_auth, options), http)
}

/// Serves `app` on 127.0.0.1:0 with the sign-in `web_auth` (OIDC, say).
pub async fn serve_auth(app: App, web_auth: WebAuth, options: WebOptions) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokendesk::server::HttpOptions::from_limits(&options.limits);
    serve_router(listener, router_with(app, web_auth, options), http)
}

/// `world`'s app served with `auth.mode = "oidc"` and the limits off; the provider's issuer is
/// a loopback port nobody answers on, so only what needs no provider works (sessions made with
/// `App::start_session`, the callback's refusals). `approver_groups` give the approver role.
pub async fn oidc_mode_server(world: &World, approver_groups: &[&str]) -> Server {
    use tokendesk::config::{AuthMode, LimitsConfig, OidcConfig, RolesConfig, SecretSource};
    use tokendesk::web::oidc::{GroupRoles, Oidc};
    let roles = RolesConfig {
        approver_groups: approver_groups.iter().map(|g| (*g).to_owned()).collect(),
        ..RolesConfig::default()
    };
    let config = OidcConfig {
        issuer: "http://127.0.0.1:9/".into(),
        client_id: "tokendesk".into(),
        client_secret: secrecy::SecretString::from("secret"),
        client_secret_source: SecretSource::Code,
        scopes: vec!["openid".into()],
        login_claim: "preferred_username".into(),
        strip_domain: None,
        groups_claim: "groups".into(),
    };
    let oidc = Oidc::new(
        config,
        GroupRoles::from_config(&roles),
        world.app.public_url(),
    )
    .unwrap();
    let auth = AuthConfig {
        mode: AuthMode::Oidc,
        ..AuthConfig::default()
    };
    let listen = "127.0.0.1:0".parse().unwrap();
    let web_auth = WebAuth::with_oidc(&auth, listen, vec![], Some(oidc)).unwrap();
    let options = WebOptions {
        limits: LimitsConfig {
            submissions_per_hour: 0,
            reveals_per_hour: 0,
            envelope_lookups_per_minute: 0,
            sign_ins_per_minute: 0,
            ..LimitsConfig::default()
        },
        ..WebOptions::default()
    };
    serve_auth(world.app.clone(), web_auth, options).await
}

/// Serves `routes` on `listener` the way `tokendesk serve` does.
pub fn serve_router(
    listener: tokio::net::TcpListener,
    routes: axum::Router,
    options: tokendesk::server::HttpOptions,
) -> Server {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let _stop = stop;
        let _ = tokendesk::server::serve(listener, routes, options, stopped).await;
    });
    Server {
        base: format!("http://{addr}"),
        task,
    }
}

/// An answer, with its body kept as text and parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// `error.code` of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `error.field` of an error answer.
    pub fn field(&self) -> String {
        self.json()["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self
    }

    /// Asserts an error answer of the given status and code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Resp {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        assert_eq!(self.code(), code, "unexpected error: {}", self.text);
        assert!(
            self.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "errors are JSON: {:?}",
            self.headers
        );
        assert!(
            self.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        self
    }
}

/// A world with its web front.
pub struct Api {
    pub world: World,
    pub server: Server,
    pub client: reqwest::Client,
    /// Every answer body seen (to scan for secrets).
    pub seen: std::sync::Mutex<Vec<(String, String)>>,
    /// The served OpenAPI document, which every JSON answer is checked against.
    pub contract: Contract,
    /// How many answers were checked against it.
    pub checked: std::sync::atomic::AtomicUsize,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Api {
    /// Trusted-header sign-in trusting loopback, the default body limit.
    pub async fn start(db: TestDb) -> Api {
        Self::with(db, AuthConfig::default(), WebOptions::default()).await
    }

    pub async fn with(db: TestDb, auth: AuthConfig, options: WebOptions) -> Api {
        Self::on(World::new(db).await, auth, options).await
    }

    /// `world`'s app served with `auth` and `options`.
    pub async fn on(world: World, auth: AuthConfig, options: WebOptions) -> Api {
        // The document this server serves (the coverage test reads it over HTTP too).
        let doc = tokendesk::web::openapi_document(&auth.header, &world.app.policy());
        let doc = serde_json::to_value(&doc).unwrap();
        let server = serve(world.app.clone(), auth, vec![], None, options).await;
        Api {
            world,
            server,
            client: client(),
            seen: Default::default(),
            contract: Contract::new(doc),
            checked: Default::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// Sends a request as `who` (no sign-in header when `None`).
    pub async fn send(&self, who: Option<&str>, builder: reqwest::RequestBuilder) -> Resp {
        let builder = match who {
            // A session cookie (see the authorization matrix).
            Some(cookie) if cookie.starts_with("Cookie ") => {
                builder.header("Cookie", &cookie["Cookie ".len()..])
            }
            // A service key (see the authorization matrix).
            Some(bearer) if bearer.starts_with("Bearer ") => {
                builder.header("Authorization", bearer)
            }
            Some(login) => builder.header("X-Remote-User", login),
            None => builder,
        };
        let request = builder.build().unwrap();
        let label = format!("{} {}", request.method(), request.url().path());
        let (method, path) = (
            request.method().to_string(),
            request.url().path().to_owned(),
        );
        let r = self.client.execute(request).await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if json {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{label} answered invalid JSON ({e}): {text}"));
            match self.contract.check(&method, &path, status, &body) {
                Ok(true) => {
                    self.checked
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(problem) => panic!("{problem}"),
            }
        }
        self.seen.lock().unwrap().push((label, text.clone()));
        Resp {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, who: &str, path: &str) -> Resp {
        self.send(Some(who), self.client.get(self.url(path))).await
    }

    pub async fn get_anon(&self, path: &str) -> Resp {
        self.send(None, self.client.get(self.url(path))).await
    }

    /// POSTs `body` as JSON.
    pub async fn post(&self, who: &str, path: &str, body: Value) -> Resp {
        self.send(Some(who), self.client.post(self.url(path)).json(&body))
            .await
    }

    /// POSTs raw bytes with the given content type (none when `None`).
    pub async fn post_raw(
        &self,
        who: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let mut builder = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        self.send(Some(who), builder).await
    }

    /// `who` asks for a token valid 30 days; returns the request id.
    pub async fn submit(&self, who: &str) -> i64 {
        let r = self
            .post(
                who,
                "/api/v1/requests",
                serde_json::json!({
                    "purpose": "grading scripts for my course sections",
                    "expires_on": self.world.today_plus(30),
                    "application": "grader.py",
                }),
            )
            .await
            .expect(201);
        r.json()["id"].as_i64().unwrap()
    }

    /// Submit, approve (as ada.admin) and issue; returns the request as the API shows it.
    pub async fn issued(&self, who: &str) -> Value {
        let id = self.submit(who).await;
        self.post(
            "ada.admin",
            &format!("/api/v1/requests/{id}/approve"),
            serde_json::json!({}),
        )
        .await
        .expect(200);
        tokendesk::jobs::drain(&self.world.app).await.unwrap();
        let r = self
            .get(who, &format!("/api/v1/requests/{id}"))
            .await
            .expect(200);
        let request = r.json();
        assert_eq!(request["state"], "issued", "{request}");
        request
    }
}
