//! The Debian package's configuration file (`packaging/debian/tokendesk.toml`, installed as
//! `/etc/tokendesk/tokendesk.toml`): `check-config` accepts it once the secret files the
//! package's postinst makes exist, it names every key, and each `# key = value` line shows the
//! real default. `scripts/package-test` checks the installed file again, as root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn packaged() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/debian/tokendesk.toml")
}

/// The file's key lines, by table: `key = value` (set) and `# key = value` (a default shown),
/// plus `# key: …` (a key without a default, described). Commented table headers count.
#[derive(Debug, Default)]
struct Lines {
    set: BTreeMap<String, String>,
    defaults: BTreeMap<String, (String, usize)>,
    described: Vec<String>,
}

fn key_lines(text: &str) -> Lines {
    let mut lines = Lines::default();
    let mut table = String::new();
    for (n, raw) in text.lines().enumerate() {
        let (commented, line) = match raw.strip_prefix("# ") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if raw.starts_with('#') && !commented {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
            continue;
        }
        let full = |key: &str| {
            if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            }
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if let Some((key, value)) = line.split_once(" = ")
            && ident(key)
        {
            if commented {
                lines
                    .defaults
                    .insert(full(key), (value.trim().to_owned(), n + 1));
            } else {
                lines.set.insert(full(key), value.trim().to_owned());
            }
        } else if let Some((key, _)) = line.split_once(": ")
            && commented
            && ident(key)
        {
            lines.described.push(full(key));
        }
    }
    lines
}

/// A TOML value as the documentation's default column writes it (inside the backticks).
fn as_documented(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => format!("\"{s}\""),
                    other => as_documented(other),
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[test]
fn packaged_config_shows_every_key_with_its_real_default() {
    let text = std::fs::read_to_string(packaged()).unwrap();
    let lines = key_lines(&text);
    let mut problems = Vec::new();
    let mut known = Vec::new();
    for (table, keys) in tokendesk::config::sections() {
        let full = |key: &str| match table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_owned(),
        };
        for k in &keys {
            let name = full(&k.key);
            known.push(name.clone());
            // A secret is named by either of its forms (`admin_token` / `admin_token_file`).
            let other = keys
                .iter()
                .find(|o| {
                    o.companion_of.as_deref() == Some(k.key.as_str())
                        || k.companion_of.as_deref() == Some(o.key.as_str())
                })
                .map(|o| full(&o.key));
            let named = |n: &str| {
                lines.set.contains_key(n)
                    || lines.defaults.contains_key(n)
                    || lines.described.iter().any(|d| d == n)
            };
            if !named(&name) && !other.as_deref().is_some_and(named) {
                problems.push(format!(
                    "`{name}` is not in the file (set, `# {} = default` or `# {}: …`)",
                    k.key, k.key
                ));
            }
            let Some((value, line)) = lines.defaults.get(&name) else {
                continue;
            };
            // Only a default the documentation gives as one literal can be written as a line.
            let literal = k
                .default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'));
            let Some(default) = literal else {
                problems.push(format!(
                    "line {line}: `# {} = {value}` but the default is {} (write `# {}: …` instead)",
                    k.key, k.default, k.key
                ));
                continue;
            };
            let parsed: toml::Table = match toml::from_str(&format!("v = {value}")) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("line {line}: `{value}` is not a TOML value: {e}"));
                    continue;
                }
            };
            let shown = as_documented(&parsed["v"]);
            if shown != default {
                problems.push(format!(
                    "line {line}: `# {} = {value}` but the default is `{default}`",
                    k.key
                ));
            }
        }
    }
    for name in lines
        .set
        .keys()
        .chain(lines.defaults.keys())
        .chain(&lines.described)
    {
        if !known.contains(name) {
            problems.push(format!("`{name}` is not a configuration key"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What the postinst does: the secret files beside the configuration, then check-config.
#[test]
fn packaged_config_passes_check_config_with_the_secret_files_postinst_makes() {
    let dir = std::env::temp_dir().join(format!("tokendesk-packaging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(packaged())
        .unwrap()
        .replace("/etc/tokendesk/", &format!("{}/", dir.display()));
    let file = dir.join("tokendesk.toml");
    std::fs::write(&file, text).unwrap();
    // As postinst writes them: a placeholder token, 32 random bytes in base64 for the keys,
    // each readable by the service's user only.
    let secrets = [
        (
            "canvas-admin-token",
            "placeholder-replace-with-the-canvas-admin-token",
        ),
        ("outbox.key", "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="),
        (
            "fingerprint.key",
            "ESIzRFVmd4iZqrvM3e7/ABEiM0RVZneImaq7zN3u/wA=",
        ),
        (
            "proxy-secret",
            "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
        ),
    ];
    for (name, content) in secrets {
        let path = dir.join(name);
        std::fs::write(&path, format!("{content}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let no_env: [(&str, &str); 0] = [];
    let report = tokendesk::config::check_config_report_with_env(&file, no_env);
    let warnings = tokendesk::config::Config::load(Some(&file), no_env)
        .map(|c| c.warnings)
        .unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        warnings.is_empty(),
        "check-config warns about the packaged file:\n{}",
        warnings.join("\n")
    );
    let summary = match report {
        Ok(s) => s,
        Err(e) => panic!("check-config refuses the packaged file:\n{e}"),
    };
    for expected in [
        "listen:          127.0.0.1:8080",
        "database:        sqlite",
        "/var/lib/tokendesk/tokendesk.db",
        "auth:            trusted-header (header X-Remote-User",
        "email:           smtp",
        "localhost:25 (none)",
        "email.outbox_key: set (from file",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in the summary:\n{summary}"
        );
    }
}
