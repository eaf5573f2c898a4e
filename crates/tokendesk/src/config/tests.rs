#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::*;

const TOKEN: &str = "7~supersecretadmintoken";
const SMTP_PASSWORD: &str = "smtp-hunter2-password";

/// A temporary directory removed on drop (no tempfile crate).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("tokendesk-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).expect("create file");
        f.write_all(content.as_bytes()).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NO_ENV: [(&str, &str); 0] = [];

fn load_text(name: &str, text: &str) -> Result<Config, ConfigErrors> {
    let dir = TempDir::new(name);
    let path = dir.write("tokendesk.toml", text);
    Config::load(Some(&path), NO_ENV)
}

fn errors_of(name: &str, text: &str) -> ConfigErrors {
    match load_text(name, text) {
        Ok(_) => panic!("expected errors for {name}"),
        Err(e) => e,
    }
}

fn minimal() -> String {
    format!("[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"{TOKEN}\"\n")
}

const FULL: &str = r#"
listen = "0.0.0.0:8443"
public_url = "https://tokens.example.edu/desk"
database_url = "postgres://tokendesk:dbpass@db.example.edu:5432/tokendesk"
max_body_bytes = 131072

[canvas]
url = "https://canvas.example.edu"
admin_token_file = "secrets/canvas"
account_id = 3
user_id_pattern = "sis_user_id:{login}"
timeout_secs = 15
max_retries = 2

[auth]
mode = "trusted-header"
header = "X-Remote-User"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1/128"]

[roles]
approvers = ["ann", "bob"]
helpdesk = ["hal"]
auditors = ["aud"]
admins = ["root"]

[email]
transport = "smtp"
from = "Token Desk <tokendesk@example.edu>"
smtp_host = "smtp.example.edu"
smtp_tls = "tls"
smtp_user = "tokendesk"
smtp_password_file = "secrets/smtp"
outbox_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

[policy]
max_lifetime_days = 90
link_ttl_days = 5
max_reveals = 2
purpose_min_chars = 10
max_open_requests_per_person = 2
max_active_tokens_per_person = 3
activation_grace_days = 10
reminder_days = [7, 30, 1]
delete_expired = false
renewal = "extend"
revoke_unused_days = 60

[notify]
approver_digest_minutes = 15
"#;

fn full_dir(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    std::fs::create_dir_all(dir.0.join("secrets")).expect("mkdir");
    dir.write("secrets/canvas", &format!("  {TOKEN}\n"));
    dir.write("secrets/smtp", &format!("{SMTP_PASSWORD}\n"));
    let path = dir.write("tokendesk.toml", FULL);
    (dir, path)
}

#[test]
fn full_valid_file() {
    let (dir, path) = full_dir("full");
    let c = Config::load(Some(&path), NO_ENV).expect("valid");
    assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(c.public_url.as_str(), "https://tokens.example.edu/desk/");
    assert!(matches!(&c.database, DatabaseUrl::Postgres(u) if u.expose_url().contains("dbpass")));
    assert!(!c.database.to_string().contains("dbpass"));
    assert_eq!(c.max_body_bytes, 131072);
    assert_eq!(c.canvas.admin_token.expose_secret(), TOKEN);
    assert_eq!(
        c.canvas.admin_token_source,
        SecretSource::File(dir.0.join("secrets/canvas"))
    );
    assert_eq!(c.canvas.account_id, 3);
    assert_eq!(c.canvas.user_id_for("ann"), "sis_user_id:ann");
    assert_eq!(c.canvas.timeout(), std::time::Duration::from_secs(15));
    assert_eq!(c.canvas.max_retries, 2);
    assert_eq!(c.auth.mode, AuthMode::TrustedHeader);
    assert!(c.auth.is_trusted_proxy("10.9.8.7".parse().expect("ip")));
    assert!(c.auth.is_trusted_proxy("192.168.1.7".parse().expect("ip")));
    assert!(
        c.auth
            .is_trusted_proxy("::ffff:10.0.0.1".parse().expect("ip"))
    );
    assert!(!c.auth.is_trusted_proxy("192.168.1.8".parse().expect("ip")));
    assert_eq!(c.roles.approvers, vec!["ann", "bob"]);
    assert_eq!(c.roles.admins, vec!["root"]);
    assert_eq!(c.email.transport, EmailTransport::Smtp);
    assert_eq!(
        c.email.from.to_string(),
        "Token Desk <tokendesk@example.edu>"
    );
    let smtp = c.email.smtp.as_ref().expect("smtp");
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.tls),
        ("smtp.example.edu", 465, SmtpTls::Tls)
    );
    let cred = smtp.credentials.as_ref().expect("credentials");
    assert_eq!(cred.user, "tokendesk");
    assert_eq!(cred.password.expose_secret(), SMTP_PASSWORD);
    let key = c.email.outbox_key.as_ref().expect("outbox key");
    let same = crate::delivery::envelope::AtRestKey::parse(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    )
    .expect("key");
    let sealed = crate::delivery::envelope::seal_at_rest(key.key(), b"t", b"x").expect("seal");
    assert_eq!(
        crate::delivery::envelope::open_at_rest(&same, b"t", &sealed)
            .expect("open")
            .as_slice(),
        b"x"
    );
    assert_eq!(
        c.policy,
        Policy {
            max_lifetime_days: 90,
            link_ttl_days: 5,
            max_reveals: 2,
            purpose_min_chars: 10,
            max_open_requests_per_person: 2,
            max_active_tokens_per_person: 3,
            activation_grace_days: 10,
            reminder_days: crate::domain::policy::ReminderDays::new(&[30, 7, 1]).unwrap(),
            delete_expired: false,
            renewal: crate::domain::policy::RenewalMode::Extend,
            revoke_unused_days: 60,
        }
    );
    assert_eq!(c.policy.reminder_days.days(), &[30, 7, 1]);
    assert_eq!(c.notify.approver_digest_minutes, 15);
}

#[test]
fn minimal_file_gets_defaults() {
    let dir = TempDir::new("minimal");
    let path = dir.write("tokendesk.toml", &minimal());
    let c = Config::load(Some(&path), NO_ENV).expect("valid");
    assert_eq!(c.listen, crate::config::Listen::Tcp(DEFAULT_LISTEN));
    assert_eq!(c.public_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.database, DatabaseUrl::Sqlite(dir.0.join("tokendesk.db")));
    assert_eq!(c.max_body_bytes, 64 * 1024);
    assert_eq!(c.canvas.account_id, 1);
    assert_eq!(c.canvas.user_id_pattern.as_str(), "sis_login_id:{login}");
    assert_eq!((c.canvas.timeout_secs, c.canvas.max_retries), (30, 4));
    assert_eq!(c.canvas.admin_token_source, SecretSource::Inline);
    assert_eq!(c.auth, AuthConfig::default());
    assert!(c.auth.is_trusted_proxy("127.0.0.1".parse().expect("ip")));
    assert!(c.auth.is_trusted_proxy("::1".parse().expect("ip")));
    assert_eq!(c.auth.header, "X-Remote-User");
    assert_eq!(c.roles, RolesConfig::default());
    assert_eq!(c.email.transport, EmailTransport::Mailbox);
    assert_eq!(c.email.from.to_string(), DEFAULT_FROM);
    assert!(c.email.smtp.is_none() && c.email.outbox_key.is_none());
    assert_eq!(c.policy, Policy::default());
    assert_eq!(c.policy.max_lifetime(), time::Duration::days(120));
    assert_eq!(c.policy.link_ttl(), time::Duration::days(7));
}

#[test]
fn database_urls() {
    let base = Path::new("/etc/tokendesk");
    assert_eq!(
        DatabaseUrl::parse("sqlite://data/t.db", base),
        Ok(DatabaseUrl::Sqlite(base.join("data/t.db")))
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite:///var/lib/t.db", base),
        Ok(DatabaseUrl::Sqlite("/var/lib/t.db".into()))
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite:t.db", base),
        Ok(DatabaseUrl::Sqlite(base.join("t.db")))
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite::memory:", base),
        Ok(DatabaseUrl::SqliteMemory)
    );
    assert_eq!(
        DatabaseUrl::parse("postgres://u@h/db", base).map(|d| d.kind()),
        Ok("postgres")
    );
    assert_eq!(
        DatabaseUrl::parse("postgresql://u:p@h:5432/db", base).map(|d| d.to_string()),
        Ok("postgresql://u:***@h:5432/db".into())
    );
    let err = DatabaseUrl::parse("mysql://x/y", base).expect_err("unsupported");
    assert!(err.contains("use sqlite://PATH"), "{err}");
    assert!(DatabaseUrl::parse("postgres:///db", base).is_err());
    assert!(DatabaseUrl::parse("sqlite://", base).is_err());
}

#[test]
fn unknown_keys_all_reported_with_suggestions_and_lines() {
    let text = format!(
        "listen_addr = \"1.2.3.4:1\"\n{}tokn = \"x\"\n[canvsa]\nurl = 1\n[policy]\nmax_reveal = 3\n",
        minimal()
    );
    let errs = errors_of("unknown", &text);
    assert_eq!(errs.len(), 4, "{errs}");
    assert!(
        errs.iter().all(|e| e.kind == ErrorKind::UnknownKey),
        "{errs}"
    );
    let text = errs.to_string();
    assert!(text.contains("canvas.tokn: unknown key `canvas.tokn`; known keys in [canvas]: url, admin_token, admin_token_file"), "{text}");
    assert!(text.contains("tokendesk.toml:5: canvas.tokn"), "{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(":1: listen_addr")),
        "sorted by line: {text}"
    );
    assert!(text.contains("unknown key `listen_addr`"), "{text}");
    assert!(
        text.contains("unknown table `canvsa`; did you mean `canvas`?"),
        "{text}"
    );
    assert!(text.contains("did you mean `max_reveals`?"), "{text}");
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn type_errors_all_reported() {
    let text = format!(
        "{}account_id = \"3\"\ntimeout_secs = -1\n[auth]\ntrusted_proxies = \"10.0.0.0/8\"\n[email]\nsmtp_port = 70000\n[policy]\nmax_reveals = 3.5\n",
        minimal()
    );
    let errs = errors_of("types", &text);
    assert_eq!(errs.len(), 5, "{errs}");
    assert!(errs.iter().all(|e| e.kind == ErrorKind::Type), "{errs}");
    let text = errs.to_string();
    assert!(text.contains(":4: canvas.account_id: expected a whole number between 0 and 9223372036854775807, found a string; write the number without quotes"), "{text}");
    assert!(
        text.contains("canvas.timeout_secs: must be a whole number between 0 and"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"auth.trusted_proxies: expected a list of strings, found a string; write it as ["#
        ),
        "{text}"
    );
    assert!(
        text.contains("email.smtp_port: must be a whole number between 0 and 65535 (got 70000)"),
        "{text}"
    );
    assert!(
        text.contains(
            "policy.max_reveals: expected a whole number between 0 and 4294967295, found a float"
        ),
        "{text}"
    );
}

#[test]
fn syntax_error_has_line() {
    let errs = errors_of("syntax", "listen = \"127.0.0.1:1\"\n[canvas\nurl = 3\n");
    assert_eq!(errs.errors[0].kind, ErrorKind::Syntax);
    assert!(
        matches!(errs.errors[0].origin, Origin::File { line: Some(2), .. }),
        "{errs:?}"
    );
}

#[test]
fn missing_file_is_an_error() {
    let errs =
        Config::load(Some(Path::new("/nonexistent/tokendesk.toml")), NO_ENV).expect_err("missing");
    assert_eq!(errs.errors[0].kind, ErrorKind::Io);
    assert!(errs.to_string().contains("/nonexistent/tokendesk.toml"));
}

#[test]
fn value_errors_all_reported() {
    let text = r#"
listen = "localhost:8080"
public_url = "http://tokens.example.edu"
database_url = "mysql://db/x"
[canvas]
url = "ftp://canvas.example.edu"
admin_token = "t"
admin_token_file = "/run/secrets/canvas"
user_id_pattern = "sis_login_id:"
[auth]
mode = "saml"
header = "X Remote User"
trusted_proxies = ["10.0.0.0/8", "not-an-ip"]
[roles]
approvers = ["ann", "bob smith", ""]
[email]
transport = "smtp"
smtp_tls = "ssl"
smtp_password = "p"
[policy]
max_lifetime_days = 0
link_ttl_days = 91
max_reveals = 101
purpose_min_chars = 1001
max_open_requests_per_person = 0
max_active_tokens_per_person = 0
"#;
    let errs = errors_of("values", text);
    let text = errs.to_string();
    let expect = [
        "listen: `localhost:8080` is not IP:PORT",
        "public_url: `http://tokens.example.edu` must use https:// (delivery links travel over it); plain http:// is allowed only for a loopback host",
        "database_url: unsupported database URL; use sqlite://PATH",
        "canvas.url: `ftp://canvas.example.edu` must be an http:// or https:// URL with a host",
        "canvas.admin_token: admin_token and admin_token_file are both set; keep one",
        "canvas.user_id_pattern: `sis_login_id:` must contain {login}",
        "auth.mode: expected one of trusted-header, demo, oidc, got `saml`",
        "auth.header: `X Remote User` is not an HTTP header name",
        "auth.trusted_proxies: `not-an-ip` is not an IP network",
        "roles.approvers: item 2 (`bob smith`) must be a non-empty login without whitespace",
        "roles.approvers: item 3 (``) must be a non-empty login",
        "email.from: required with transport = \"smtp\"",
        "email.smtp_tls: expected one of none, starttls, tls, got `ssl`",
        "email.smtp_password: is set but smtp_user is not",
        "email.smtp_host: required with transport = \"smtp\"; set `smtp_host` in [email] or TOKENDESK_EMAIL__SMTP_HOST",
        "policy.max_lifetime_days: must be between 1 and 3650 (got 0)",
        "policy.link_ttl_days: must be between 1 and 90 (got 91)",
        "policy.max_reveals: must be between 1 and 100 (got 101)",
        "policy.purpose_min_chars: must be between 0 and 1000 (got 1001)",
        "policy.max_open_requests_per_person: must be between 1 and 1000 (got 0)",
        "policy.max_active_tokens_per_person: must be between 1 and 1000 (got 0)",
    ];
    for e in expect {
        assert!(text.contains(e), "missing `{e}` in:\n{text}");
    }
    assert_eq!(errs.len(), expect.len(), "{text}");
    assert_eq!(text.lines().count(), expect.len());
    // Secrets are never echoed.
    assert!(!errs.iter().any(|e| e.message.contains("\"t\"")));
}

#[test]
fn link_ttl_must_not_exceed_lifetime_and_canvas_required() {
    let errs = errors_of(
        "ttl",
        "[policy]\nmax_lifetime_days = 5\nlink_ttl_days = 7\n",
    );
    let text = errs.to_string();
    assert!(
        text.contains("policy.link_ttl_days: must not exceed max_lifetime_days (5); got 7"),
        "{text}"
    );
    assert!(text.contains("canvas.url: required"), "{text}");
    assert!(
        text.contains(
            "canvas.admin_token: required; set exactly one of `admin_token` or `admin_token_file`"
        ),
        "{text}"
    );
    assert_eq!(errs.len(), 3, "{text}");
}

#[test]
fn canvas_http_only_on_loopback_and_demo_only_on_loopback() {
    let ok =
        "[canvas]\nurl = \"http://127.0.0.1:9000\"\nadmin_token = \"x\"\n[auth]\nmode = \"demo\"\n";
    let c = load_text("loop", ok).expect("loopback http is fine");
    assert_eq!(c.auth.mode, AuthMode::Demo);
    let errs = errors_of(
        "loop2",
        &format!("listen = \"0.0.0.0:8080\"\n{ok}").replace("127.0.0.1:9000", "canvas.example.edu"),
    );
    let text = errs.to_string();
    assert!(
        text.contains("canvas.url: `http://canvas.example.edu` must use https://"),
        "{text}"
    );
    assert!(
        text.contains("auth.mode: demo lets anyone sign in as anyone"),
        "{text}"
    );
}

#[test]
fn env_overrides_keys_lists_and_numbers() {
    let dir = TempDir::new("env");
    let path = dir.write(
        "tokendesk.toml",
        &format!(
            "{}[policy]\nmax_reveals = 5\n[roles]\napprovers = [\"zed\"]\n",
            minimal()
        ),
    );
    let env = [
        ("TOKENDESK_LISTEN", "127.0.0.1:9999"),
        ("TOKENDESK_DATABASE_URL", "sqlite::memory:"),
        ("TOKENDESK_POLICY__MAX_REVEALS", " 7 "),
        ("TOKENDESK_ROLES__APPROVERS", "ann, bob,"),
        ("TOKENDESK_ROLES__ADMINS", ""),
        ("TOKENDESK_AUTH__TRUSTED_PROXIES", "10.0.0.0/8,::1"),
        ("TOKENDESK_CANVAS__ACCOUNT_ID", "12"),
        ("TOKENDESK_CONFIG", "/ignored"),
        ("TOKENDESK_LOG", "debug"),
        ("PATH", "/usr/bin"),
    ];
    let c = Config::load(Some(&path), env).expect("valid");
    assert_eq!(c.listen.tcp().map(|a| a.port()), Some(9999));
    assert_eq!(c.database, DatabaseUrl::SqliteMemory);
    assert_eq!(c.policy.max_reveals, 7);
    assert_eq!(c.roles.approvers, vec!["ann", "bob"]);
    assert!(c.roles.admins.is_empty());
    assert_eq!(c.auth.trusted_proxies.len(), 2);
    assert_eq!(c.canvas.account_id, 12);

    // Without a file: defaults + environment only.
    let env = [
        ("TOKENDESK_CANVAS__URL", "https://c.example.edu"),
        ("TOKENDESK_CANVAS__ADMIN_TOKEN", TOKEN),
    ];
    let c = Config::load(None, env).expect("valid without file");
    assert_eq!(
        c.canvas.admin_token_source,
        SecretSource::Env("TOKENDESK_CANVAS__ADMIN_TOKEN".into())
    );
    assert_eq!(c.file, None);
}

#[test]
fn env_errors_name_the_variable() {
    let env = [
        ("TOKENDESK_CANVAS__URL", "https://c.example.edu"),
        ("TOKENDESK_CANVAS__ADMIN_TOKEN", TOKEN),
        ("TOKENDESK_AUTH__MODE", "saml"),
        ("TOKENDESK_POLICY__MAX_REVEALS", "many"),
        ("TOKENDESK_CANVAS_URL", "https://x"),
        ("TOKENDESK_BOGUS", "1"),
        ("TOKENDESK_POLICY", "1"),
    ];
    let errs = Config::load(None, env).expect_err("invalid");
    let text = errs.to_string();
    assert!(
        text.contains(
            "TOKENDESK_AUTH__MODE (auth.mode): expected one of trusted-header, demo, oidc, got `saml`"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "TOKENDESK_POLICY__MAX_REVEALS (policy.max_reveals): expected a whole number"
        ),
        "{text}"
    );
    assert!(text.contains("TOKENDESK_CANVAS_URL: unknown environment variable; did you mean TOKENDESK_CANVAS__URL?"), "{text}");
    assert!(
        text.contains("TOKENDESK_BOGUS: unknown environment variable"),
        "{text}"
    );
    assert!(text.contains("TOKENDESK_POLICY: [policy] is a table; set its keys, e.g. TOKENDESK_POLICY__MAX_LIFETIME_DAYS"), "{text}");
    assert_eq!(errs.len(), 5, "{text}");
    assert!(!text.contains(TOKEN));
}

#[test]
fn env_secret_replaces_file_secret_form() {
    let dir = TempDir::new("envsecret");
    let path = dir.write(
        "tokendesk.toml",
        "[canvas]\nurl = \"https://c.example.edu\"\nadmin_token_file = \"missing\"\n",
    );
    let c = Config::load(Some(&path), [("TOKENDESK_CANVAS__ADMIN_TOKEN", "from-env")])
        .expect("env wins");
    assert_eq!(c.canvas.admin_token.expose_secret(), "from-env");
    let errs = Config::load(
        Some(&path),
        [
            ("TOKENDESK_CANVAS__ADMIN_TOKEN", "a"),
            ("TOKENDESK_CANVAS__ADMIN_TOKEN_FILE", "b"),
        ],
    )
    .expect_err("both in env");
    assert!(errs.to_string().contains("both set; keep one"), "{errs}");
}

#[test]
fn secrets_from_files() {
    let dir = TempDir::new("secretfiles");
    dir.write("token", &format!("\n{TOKEN}  \n"));
    dir.write("empty", " \n");
    let base = "[canvas]\nurl = \"https://c.example.edu\"\n";
    let path = dir.write("a.toml", &format!("{base}admin_token_file = \"token\"\n"));
    let c = Config::load(Some(&path), NO_ENV).expect("relative to the file's directory");
    assert_eq!(c.canvas.admin_token.expose_secret(), TOKEN);

    let path = dir.write("b.toml", &format!("{base}admin_token_file = \"empty\"\n"));
    let errs = Config::load(Some(&path), NO_ENV).expect_err("empty");
    assert!(
        errs.to_string()
            .contains("canvas.admin_token_file: the file"),
        "{errs}"
    );
    assert!(errs.to_string().contains("is empty"), "{errs}");

    let path = dir.write("c.toml", &format!("{base}admin_token_file = \"nope\"\n"));
    let errs = Config::load(Some(&path), NO_ENV).expect_err("missing");
    assert_eq!(errs.errors[0].kind, ErrorKind::Io);
    assert!(errs.to_string().contains("cannot read"), "{errs}");

    let path = dir.write(
        "d.toml",
        &format!("{base}admin_token = \"x\"\nadmin_token_file = \"token\"\n"),
    );
    let errs = Config::load(Some(&path), NO_ENV).expect_err("both");
    assert_eq!(errs.errors[0].kind, ErrorKind::Conflict);
}

#[test]
fn outbox_key_forms() {
    let hex = "00".repeat(32);
    assert!(OutboxKey::parse(&hex, SecretSource::Code).is_ok());
    assert!(
        OutboxKey::parse(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            SecretSource::Code
        )
        .is_ok()
    );
    assert!(
        OutboxKey::parse(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            SecretSource::Code
        )
        .is_ok()
    );
    assert!(OutboxKey::parse("too-short", SecretSource::Code).is_err());
    assert!(OutboxKey::parse(&"00".repeat(16), SecretSource::Code).is_err());
    let errs = errors_of(
        "outbox",
        &format!("{}[email]\noutbox_key = \"abc\"\n", minimal()),
    );
    assert!(
        errs.to_string()
            .contains("email.outbox_key: must be 32 bytes"),
        "{errs}"
    );
    assert!(!errs.to_string().contains("abc"));
}

#[test]
fn smtp_details() {
    let base = format!(
        "{}[email]\ntransport = \"smtp\"\nfrom = \"a@example.edu\"\nsmtp_host = \"mail.example.edu\"\n",
        minimal()
    );
    let c = load_text("smtp1", &base).expect("valid");
    let smtp = c.email.smtp.expect("smtp");
    assert_eq!((smtp.port, smtp.tls), (587, SmtpTls::StartTls));
    assert!(smtp.credentials.is_none());
    let errs = errors_of("smtp2", &format!("{base}smtp_user = \"u\"\n"));
    assert!(
        errs.to_string().contains("email.smtp_password: required"),
        "{errs}"
    );
    let errs = errors_of(
        "smtp3",
        &format!("{base}smtp_user = \"u\"\nsmtp_password = \"p\"\nsmtp_tls = \"none\"\n"),
    );
    assert!(
        errs.to_string()
            .contains("email.smtp_tls: is \"none\" but a password is set"),
        "{errs}"
    );
    let c = load_text("smtp4", &format!("{base}smtp_tls = \"none\"\n")).expect("valid");
    assert_eq!(c.email.smtp.map(|s| s.port), Some(25));
}

#[test]
fn debug_never_shows_secrets() {
    let (_dir, path) = full_dir("debug");
    let c = Config::load(Some(&path), NO_ENV).expect("valid");
    let debug = format!("{c:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains(SMTP_PASSWORD), "{debug}");
    assert!(!debug.contains("dbpass"), "{debug}");
    assert!(!debug.contains("0a0b0c"), "{debug}");
    assert!(debug.contains("REDACTED"));
    let report = summary(&c);
    for secret in [TOKEN, SMTP_PASSWORD, "dbpass"] {
        assert!(!report.contains(secret), "{report}");
    }
}

#[test]
fn check_config_report_summarizes() {
    let (dir, path) = full_dir("report");
    let report = check_config_report_with_env(&path, NO_ENV).expect("valid");
    assert!(report.contains("listen:          0.0.0.0:8443"), "{report}");
    assert!(
        report.contains(
            "database:        postgres (postgres://tokendesk:***@db.example.edu:5432/tokendesk)"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "canvas.admin_token: set (from file {})",
            dir.0.join("secrets/canvas").display()
        )),
        "{report}"
    );
    assert!(report.contains("email:           smtp, from Token Desk <tokendesk@example.edu>, smtp.example.edu:465 (tls)"), "{report}");
    assert!(report.contains("max_reveals 2"), "{report}");
    assert!(!report.contains(TOKEN));
    let bad = dir.write("bad.toml", "[canvas]\nurl = 1\n");
    assert!(check_config_report_with_env(&bad, NO_ENV).is_err());
}

#[test]
fn constructors() {
    let url = url::Url::parse("http://127.0.0.1:4000/").expect("url");
    let c = Config::for_tests(url.clone(), SecretString::from(TOKEN));
    assert_eq!(c.database, DatabaseUrl::SqliteMemory);
    assert!(!format!("{c:?}").contains(TOKEN));
    let c = Config::demo(
        Path::new("/tmp/demo"),
        "127.0.0.1:8081".parse().expect("addr"),
        url,
        SecretString::from(TOKEN),
    );
    assert_eq!(c.auth.mode, AuthMode::Demo);
    assert_eq!(c.public_url.as_str(), "http://127.0.0.1:8081/");
    assert_eq!(
        c.database,
        DatabaseUrl::Sqlite("/tmp/demo/tokendesk.db".into())
    );
}

/// docs/configuration.md holds exactly the tables the declarations make: a key missing from
/// either, or a different type or default, fails here. `UPDATE_DOCS=1 cargo test -p tokendesk
/// --lib docs_tables` rewrites the tables.
#[test]
fn docs_tables_are_the_declarations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let docs = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let made = super::docs::tables(&docs).expect("every section has its markers");
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &made).expect("write docs");
        return;
    }
    assert!(
        made == docs,
        "docs/configuration.md disagrees with the declarations in src/config; run \
         UPDATE_DOCS=1 cargo test -p tokendesk --lib docs_tables and review the diff"
    );
}

/// Every declared key has its environment variable, and none is reported unknown.
#[test]
fn every_declared_key_has_its_variable() {
    let mut count = 0;
    for (table, keys) in sections() {
        for key in keys {
            let var = super::load::env_name(table, &key.key);
            let errs =
                Config::load(None, [(var.as_str(), "x")]).expect_err("canvas.url is missing");
            assert!(
                !errs.iter().any(|e| e.kind == ErrorKind::UnknownKey),
                "{var}: {errs}"
            );
            count += 1;
        }
    }
    assert!(count > 40, "{count} keys");
}

/// The example passes validation once its secret files exist.
#[test]
fn example_file_is_valid_apart_from_secret_files() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tokendesk.toml");
    let errs = match Config::load(Some(&example), NO_ENV) {
        Ok(_) => return,
        Err(e) => e,
    };
    assert!(
        errs.iter()
            .all(|e| e.kind == ErrorKind::Io && e.key.ends_with("_file")),
        "{errs}"
    );
}

/// `[database]` and `[workers]`: defaults, values, ranges; `sslmode` in a PostgreSQL URL.
#[test]
fn pool_workers_and_sslmode() {
    let c = load_text("pool-defaults", &minimal()).unwrap();
    assert_eq!(c.pool, PoolConfig::default());
    assert_eq!(c.workers, WorkersConfig::default());
    assert_eq!(c.workers.lease_secs, 300);

    let text = format!(
        "database_url = \"postgres://u:pw@db.example.edu/td?sslmode=verify-full&sslrootcert=/etc/ca.pem\"\n\
         [database]\nmax_connections = 40\nacquire_timeout_secs = 5\nidle_timeout_secs = 0\n\
         view_cache_entries = 0\nview_cache_secs = 30\n\
         [workers]\nlease_secs = 60\nsweep_every_secs = 10\n{}",
        minimal()
    );
    let c = load_text("pool-set", &text).unwrap();
    assert_eq!(
        c.pool,
        PoolConfig {
            max_connections: 40,
            acquire_timeout_secs: 5,
            idle_timeout_secs: 0,
            view_cache_entries: 0,
            view_cache_secs: 30,
            auto_migrate: true,
        }
    );
    assert_eq!((c.workers.lease_secs, c.workers.sweep_every_secs), (60, 10));
    let DatabaseUrl::Postgres(url) = &c.database else {
        panic!("postgres")
    };
    assert_eq!(url.sslmode(), "verify-full");
    let summary = summary(&c);
    assert!(summary.contains("sslmode=verify-full"), "{summary}");
    assert!(summary.contains("max_connections 40"), "{summary}");
    assert!(summary.contains("view_cache_entries 0"), "{summary}");
    assert!(!summary.contains("pw@"), "{summary}");

    let bad = format!(
        "[database]\nmax_connections = 0\nacquire_timeout_secs = 601\nview_cache_entries = 1000001\n\
         view_cache_secs = 0\n[workers]\nlease_secs = 0\n{}",
        minimal()
    );
    let errs = errors_of("pool-bad", &bad);
    for key in [
        "database.max_connections",
        "database.acquire_timeout_secs",
        "database.view_cache_entries",
        "database.view_cache_secs",
        "workers.lease_secs",
    ] {
        assert!(errs.iter().any(|e| e.key == key), "{key} in {errs}");
    }

    let base = Path::new("/srv");
    for mode in SSL_MODES {
        let url = format!("postgres://u@h/db?sslmode={mode}");
        assert!(DatabaseUrl::parse(&url, base).is_ok(), "{mode}");
    }
    let err = DatabaseUrl::parse("postgres://u@h/db?sslmode=required", base).unwrap_err();
    assert!(err.contains("verify-full"), "{err}");
    let err = DatabaseUrl::parse("postgres://u@h/db?ssl_mode_typo=require", base).unwrap_err();
    assert!(err.contains("ssl_mode_typo"), "{err}");
    assert!(!err.contains("u@h"), "{err}");

    // From the environment too.
    let dir = TempDir::new("pool-env");
    let path = dir.write("tokendesk.toml", &minimal());
    let c = Config::load(
        Some(&path),
        [
            ("TOKENDESK_DATABASE__MAX_CONNECTIONS", "3"),
            ("TOKENDESK_WORKERS__LEASE_SECS", "5"),
            ("TOKENDESK_DATABASE__VIEW_CACHE_SECS", "60"),
        ],
    )
    .unwrap();
    assert_eq!((c.pool.max_connections, c.workers.lease_secs), (3, 5));
    assert_eq!(c.pool.view_cache_secs, 60);
}

#[test]
fn terms_text_is_checked() {
    let dir = TempDir::new("terms");
    let good = dir.write(
        "good.toml",
        &format!(
            "terms_text = \"  I will keep my token secret.  \"\n{}",
            minimal()
        ),
    );
    let c = Config::load(Some(&good), NO_ENV).expect("valid");
    assert_eq!(
        c.terms_text.as_deref(),
        Some("I will keep my token secret.")
    );
    let blank = dir.write("blank.toml", &format!("terms_text = \" \"\n{}", minimal()));
    let errors = Config::load(Some(&blank), NO_ENV).expect_err("blank terms");
    assert!(errors.has_key("terms_text"), "{errors}");
}

/// A `[roles]` entry that is not a valid login is named, not dropped without a word.
#[test]
fn role_entries_are_logins() {
    let long = "x".repeat(129);
    let errs = errors_of(
        "roles-logins",
        &format!("{}[roles]\nadmins = [\"root\", \"{long}\"]\n", minimal()),
    );
    let text = errs.to_string();
    assert!(
        text.contains("roles.admins: item 2") && text.contains("at most 128 characters"),
        "{text}"
    );
    assert_eq!(errs.len(), 1, "{text}");
    let c = load_text(
        "roles-ok",
        &format!("{}[roles]\nadmins = [\" Root \", \"root\"]\n", minimal()),
    )
    .expect("valid");
    assert_eq!(c.roles.admins, vec!["root"], "trimmed, lower-cased, once");
}

/// check-config refuses a pattern that could let a login name someone else in Canvas.
#[test]
fn user_id_patterns_must_tie_a_login_to_one_person() {
    for (pattern, ok) in [
        ("sis_login_id:{login}", true),
        ("sis_user_id:{login}", true),
        ("{login}", true),
        ("{login}@example.edu", false),
        ("sis_login_id:{login}.x", false),
        ("x:{login}", false),
    ] {
        let text = format!("{}user_id_pattern = \"{pattern}\"\n", minimal());
        let result = load_text("pattern", &text);
        assert_eq!(result.is_ok(), ok, "{pattern}: {:?}", result.err());
        if !ok {
            let errs = result.err().unwrap().to_string();
            assert!(errs.contains("cannot guarantee"), "{errs}");
        }
    }
}

#[test]
fn reminder_days_are_a_short_list_of_days() {
    for (value, wanted) in [
        ("[14, 3]", Ok(vec![14u16, 3])),
        ("[3, 14, 3]", Ok(vec![14, 3])),
        ("[]", Ok(vec![])),
        ("[0]", Err("each day must be from 1 to 365, not 0")),
        ("[400]", Err("each day must be from 1 to 365, not 400")),
        ("[1, 2, 3, 4, 5]", Err("at most 4 reminders, not 5")),
        ("\"14\"", Err("expected a list of days such as [14, 3]")),
        (
            "[\"x\"]",
            Err("expected a list of whole numbers, but item 1 is a string"),
        ),
    ] {
        let text = format!("{}[policy]\nreminder_days = {value}\n", minimal());
        match (load_text("reminders", &text), wanted) {
            (Ok(c), Ok(days)) => assert_eq!(c.policy.reminder_days.days(), &days[..], "{value}"),
            (Err(e), Err(message)) => {
                assert!(e.to_string().contains(message), "{value}: {e}");
                assert!(
                    e.to_string().contains("policy.reminder_days"),
                    "{value}: {e}"
                );
            }
            (got, wanted) => panic!("{value}: got {got:?}, wanted {wanted:?}"),
        }
    }
    let env = [
        ("TOKENDESK_CANVAS__URL", "https://c.example.edu"),
        ("TOKENDESK_CANVAS__ADMIN_TOKEN", TOKEN),
        ("TOKENDESK_POLICY__REMINDER_DAYS", "30, 1"),
        ("TOKENDESK_POLICY__RENEWAL", "extend"),
    ];
    let c = Config::load(None, env).unwrap();
    assert_eq!(c.policy.reminder_days.days(), &[30, 1]);
    assert_eq!(c.policy.renewal, crate::domain::policy::RenewalMode::Extend);
}
