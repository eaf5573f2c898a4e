//! The one log stream: standard error (the journal under systemd), readable text or JSON lines
//! (`log.format`). Which lines: `TOKENDESK_LOG`, else `RUST_LOG`, else `log.filter`, else
//! [`DEFAULT_FILTER`]; the filter can be changed while running ([`apply_filter`], on SIGHUP).
//!
//! Every line written while a request is handled carries that request's span: its id, method,
//! route and, once known, the signed-in login. Secrets are never fields of anything logged.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// What is logged when neither variable says: tokendesk's own lines from `info` (one per
/// request, one per worker event), the libraries' from `warn`.
pub const DEFAULT_FILTER: &str =
    "warn,tokendesk=info,tokendesk_canvas=info,tokendesk_canvas_sim=info";

/// The variables that set the filter, the first set one winning.
pub const FILTER_VARS: [&str; 2] = ["TOKENDESK_LOG", "RUST_LOG"];

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter the environment asks for, else `configured`, else the default (with why an
/// asked-for one was refused).
fn chosen_filter(configured: Option<&str>) -> (EnvFilter, Option<String>) {
    for var in FILTER_VARS {
        if let Ok(text) = std::env::var(var)
            && !text.trim().is_empty()
        {
            return match EnvFilter::try_new(&text) {
                Ok(filter) => (filter, None),
                Err(e) => (
                    EnvFilter::new(DEFAULT_FILTER),
                    Some(format!(
                        "{var}={text:?} is not a log filter ({e}); using {DEFAULT_FILTER:?}"
                    )),
                ),
            };
        }
    }
    match configured.map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (
            EnvFilter::new(DEFAULT_FILTER),
            Some(format!(
                "log.filter is not a log filter ({e}); using {DEFAULT_FILTER:?}"
            )),
        ),
        None => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

/// Starts logging in `format` with `log.filter` (`configured`); later calls do nothing.
pub fn init(format: LogFormat, configured: Option<&str>) {
    if FILTER.get().is_some() {
        return;
    }
    let (filter, problem) = chosen_filter(configured);
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = match format {
        // Colours only on a terminal: a log file or the journal gets plain text.
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init(),
    };
    if started.is_ok() {
        let _ = FILTER.set(handle);
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The JSON lines layer: each event with its fields, target, level, time, and the fields of
/// the request span it happened in (`span`: id, method, route, path, login).
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_writer(writer)
        .with_current_span(true)
        .with_span_list(false)
}

/// Puts the filter chosen as at start in force again, with `configured` as `log.filter` (after a
/// configuration reload).
pub fn apply_filter(configured: Option<&str>) -> Result<(), String> {
    let (filter, problem) = chosen_filter(configured);
    if let Some(problem) = problem {
        return Err(problem);
    }
    let Some(handle) = FILTER.get() else {
        return Err("logging is not started".to_owned());
    };
    handle.reload(filter).map_err(|e| e.to_string())
}

/// An error with its sources, `a: b: c`: the cause chain, once, for one log line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
