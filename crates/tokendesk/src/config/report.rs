//! `tokendesk check-config FILE`: validate and summarize, never showing a secret.

use std::fmt::Write as _;
use std::path::Path;

use super::{Config, ConfigErrors, EmailTransport};

/// Load `path` with the process environment applied (as `serve` would) and summarize it.
pub fn check_config_report(path: &Path) -> Result<String, ConfigErrors> {
    check_config_report_with_env(path, std::env::vars_os())
}

/// [`check_config_report`] with an explicit environment.
pub fn check_config_report_with_env<I, K, V>(path: &Path, env: I) -> Result<String, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let config = Config::load(Some(path), env)?;
    Ok(summary(&config))
}

/// A short human summary of a valid configuration; secrets appear only as "set (from …)".
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let c = config;
    let file = c
        .file
        .as_deref()
        .map_or_else(|| "(none)".to_owned(), |p| p.display().to_string());
    let _ = writeln!(out, "configuration OK: {file}");
    let _ = writeln!(out, "listen:          {}", c.listen);
    let _ = writeln!(out, "public_url:      {}", c.public_url);
    let _ = writeln!(
        out,
        "database:        {} ({})",
        c.database.kind(),
        c.database
    );
    if let super::DatabaseUrl::Postgres(url) = &c.database {
        let _ = writeln!(out, "database.tls:    sslmode={}", url.sslmode());
    }
    let _ = writeln!(
        out,
        "database.pool:   max_connections {}, acquire_timeout_secs {}, idle_timeout_secs {}",
        c.pool.max_connections, c.pool.acquire_timeout_secs, c.pool.idle_timeout_secs
    );
    let _ = writeln!(
        out,
        "database.cache:  {}",
        if c.pool.view_cache_entries == 0 {
            "status look-ups read the database every time (view_cache_entries 0)".to_owned()
        } else {
            format!(
                "view_cache_entries {}, view_cache_secs {}",
                c.pool.view_cache_entries, c.pool.view_cache_secs
            )
        }
    );
    let _ = writeln!(
        out,
        "workers:         lease_secs {}, sweep_every_secs {}",
        c.workers.lease_secs, c.workers.sweep_every_secs
    );
    let _ = writeln!(out, "max_body_bytes:  {}", c.max_body_bytes);
    let _ = writeln!(
        out,
        "terms_text:      {}",
        if c.terms_text.is_some() {
            "set"
        } else {
            "built-in text"
        }
    );
    let _ = writeln!(out, "canvas.url:      {}", c.canvas.url);
    let _ = writeln!(out, "canvas.admin_token: {}", c.canvas.admin_token_source);
    let _ = writeln!(
        out,
        "canvas:          account {}, user id {}, timeout {}s, {} retries",
        c.canvas.account_id, c.canvas.user_id_pattern, c.canvas.timeout_secs, c.canvas.max_retries
    );
    let _ = write!(out, "auth:            {}", c.auth.mode);
    if c.auth.mode == super::AuthMode::TrustedHeader {
        let proxies: Vec<String> = c
            .auth
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = write!(
            out,
            " (header {}, trusted proxies: {})",
            c.auth.header,
            proxies.join(", ")
        );
    }
    out.push('\n');
    let r = &c.roles;
    let _ = writeln!(
        out,
        "roles:           {} approvers, {} helpdesk, {} auditors, {} admins",
        r.approvers.len(),
        r.helpdesk.len(),
        r.auditors.len(),
        r.admins.len()
    );
    let _ = write!(
        out,
        "email:           {}, from {}",
        c.email.transport, c.email.from
    );
    if let (EmailTransport::Smtp, Some(smtp)) = (c.email.transport, &c.email.smtp) {
        let _ = write!(out, ", {}:{} ({})", smtp.host, smtp.port, smtp.tls);
        if let Some(cred) = &smtp.credentials {
            let _ = write!(
                out,
                ", user {}, password {}",
                cred.user, cred.password_source
            );
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "email.outbox_key: {}",
        c.email.outbox_key.as_ref().map_or_else(
            || "not set (unsent delivery emails are stored in the clear)".to_owned(),
            |k| k.source.to_string()
        )
    );
    let p = &c.policy;
    let _ = writeln!(
        out,
        "policy:          max_lifetime_days {}, link_ttl_days {}, max_reveals {}, purpose_min_chars {}, max_open_requests_per_person {}, max_active_tokens_per_person {}",
        p.max_lifetime_days,
        p.link_ttl_days,
        p.max_reveals,
        p.purpose_min_chars,
        p.max_open_requests_per_person,
        p.max_active_tokens_per_person
    );
    out
}
