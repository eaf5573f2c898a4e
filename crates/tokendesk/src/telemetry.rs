//! Metrics, through the `metrics` facade and its Prometheus exporter: one recorder per process,
//! installed when the service starts. Counters and histograms are recorded where things happen
//! (HTTP answers here, Canvas calls in the Canvas client, emails in the app); the counts kept in
//! the database (states, queues, the audit chain) are read when `/metrics` is scraped.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use time::OffsetDateTime;

use crate::app::{App, AppResult};

/// Latency buckets, in seconds (HTTP answers and Canvas calls).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` when another recorder was installed
/// first (then nothing is recorded here).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// How often [`upkeep`] runs in `tokendesk serve` (the exporter's own default).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds what the histograms recorded since the last upkeep (or scrape) into their buckets.
/// The exporter holds each sample until then: in a service that nobody scrapes, a few per HTTP
/// answer and Canvas call piled up for good (scripts/soak's resident memory grew about 1 MB a
/// minute at 500 requests a second), so the service runs this every [`UPKEEP_EVERY`].
pub fn upkeep() {
    if let Some(handle) = install() {
        handle.run_upkeep();
    }
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, labels and meaning. [`METRICS`] is the one list: the exporter's
/// descriptions (`# HELP`) and the table in docs/configuration.md come from it.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: Kind,
    /// The labels, as documented (`state`, `queue` (`jobs`, `emails`)).
    pub labels: &'static str,
    pub help: &'static str,
}

macro_rules! metric {
    ($name:literal, $kind:ident, $labels:literal, $help:literal) => {
        MetricDoc {
            name: $name,
            kind: Kind::$kind,
            labels: $labels,
            help: $help,
        }
    };
}

/// Every metric tokendesk exports.
pub const METRICS: &[MetricDoc] = &[
    metric!(
        "tokendesk_http_requests_total",
        Counter,
        "`method`, `route`, `status`",
        "HTTP answers, by route as routed (`/requests/{id}`, never the address itself) and status"
    ),
    metric!(
        "tokendesk_http_request_duration_seconds",
        Histogram,
        "`method`, `route`",
        "Time to the answer's head"
    ),
    metric!(
        "tokendesk_requests",
        Gauge,
        "`state`",
        "Requests by state (read from the database at each scrape)"
    ),
    metric!(
        "tokendesk_tokens",
        Gauge,
        "`state`",
        "Tokens by state (read at each scrape)"
    ),
    metric!(
        "tokendesk_envelopes",
        Gauge,
        "`state`",
        "Delivery envelopes by state (read at each scrape)"
    ),
    metric!(
        "tokendesk_queue_waiting",
        Gauge,
        "`queue` (`jobs`, `emails`)",
        "Jobs or emails queued or in hand"
    ),
    metric!(
        "tokendesk_queue_dead",
        Gauge,
        "`queue`",
        "Jobs or emails given up after their last attempt"
    ),
    metric!(
        "tokendesk_queue_oldest_age_seconds",
        Gauge,
        "`queue`",
        "Age of the oldest waiting job or email (0 when none waits)"
    ),
    metric!(
        "tokendesk_emails_sent_total",
        Counter,
        "",
        "Emails handed to the SMTP server (or the demo's mailbox)"
    ),
    metric!(
        "tokendesk_email_failures_total",
        Counter,
        "`stage` (`compose`, `send`), `retry` (`yes`, `no`)",
        "Emails that could not be composed or sent, and whether they will be tried again"
    ),
    metric!(
        "tokendesk_emails_dropped_total",
        Counter,
        "",
        "Queued notices no longer needed when their turn came (a digest with nothing left to say): kept as `dead`, never sent"
    ),
    metric!(
        "tokendesk_canvas_requests_total",
        Counter,
        "`endpoint` (`DELETE /api/v1/users/:id/tokens/:id`), `outcome` (`ok`, `throttled`, `client_error`, `server_error`, `transport_error`)",
        "Canvas API calls, each retry counted"
    ),
    metric!(
        "tokendesk_canvas_request_duration_seconds",
        Histogram,
        "`endpoint`",
        "Time of one Canvas API call"
    ),
    metric!(
        "tokendesk_canvas_rate_limit_remaining",
        Gauge,
        "",
        "The last `X-Rate-Limit-Remaining` Canvas sent"
    ),
    metric!(
        "tokendesk_canvas_throttled_total",
        Counter,
        "",
        "Canvas answers that were its throttle (403 or 429 Rate Limit Exceeded)"
    ),
    metric!(
        "tokendesk_view_cache_hits_total",
        Counter,
        "",
        "Status look-ups answered from memory"
    ),
    metric!(
        "tokendesk_view_cache_misses_total",
        Counter,
        "",
        "Status look-ups read from the database"
    ),
    metric!(
        "tokendesk_audit_events",
        Gauge,
        "",
        "The audit chain's length (the newest event's sequence number; read at each scrape)"
    ),
];

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for m in METRICS {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge if m.name.ends_with("_seconds") => {
                describe_gauge!(m.name, Unit::Seconds, m.help)
            }
            Kind::Gauge => describe_gauge!(m.name, m.help),
            Kind::Histogram => describe_histogram!(m.name, Unit::Seconds, m.help),
        }
    }
}

/// The table of [`METRICS`] for docs/configuration.md.
pub fn docs_table() -> String {
    let mut out = String::from("| metric | type | labels | what |\n| --- | --- | --- | --- |\n");
    for m in METRICS {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} |\n",
            m.name, m.labels, m.help
        ));
    }
    out
}

/// Counts an email handed over.
pub fn email_sent() {
    counter!("tokendesk_emails_sent_total").increment(1);
}

/// Counts a queued notice dropped as no longer needed.
pub fn email_dropped() {
    counter!("tokendesk_emails_dropped_total").increment(1);
}

/// Counts an email that failed at `stage` (`compose` or `send`).
pub fn email_failed(stage: &'static str, retry: bool) {
    counter!("tokendesk_email_failures_total", "stage" => stage, "retry" => if retry { "yes" } else { "no" })
        .increment(1);
}

/// Counts every answer by route (as routed: `/requests/{id}`, never the address itself, so
/// the labels stay few) and status, and times it.
pub async fn observe_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let method: &'static str = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!("tokendesk_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!("tokendesk_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The scrape: the database's counts read now, then everything in Prometheus's text format.
pub async fn render(app: &App) -> AppResult<String> {
    let Some(handle) = install() else {
        return Ok(String::new());
    };
    let stats = app.stats().await?;
    let now = app.now();
    for (name, rows) in [
        ("tokendesk_requests", &stats.requests),
        ("tokendesk_tokens", &stats.tokens),
        ("tokendesk_envelopes", &stats.envelopes),
    ] {
        for (state, n) in rows {
            gauge!(name, "state" => *state).set(*n as f64);
        }
    }
    for (queue, q) in [("jobs", stats.jobs), ("emails", stats.emails)] {
        gauge!("tokendesk_queue_waiting", "queue" => queue).set(q.waiting as f64);
        gauge!("tokendesk_queue_dead", "queue" => queue).set(q.dead as f64);
        gauge!("tokendesk_queue_oldest_age_seconds", "queue" => queue)
            .set(q.oldest.map_or(0.0, |t| age(now, t)));
    }
    let cache = app.view_cache_stats();
    counter!("tokendesk_view_cache_hits_total").absolute(cache.hits);
    counter!("tokendesk_view_cache_misses_total").absolute(cache.misses);
    gauge!("tokendesk_audit_events").set(stats.audit_head as f64);
    handle.run_upkeep();
    Ok(handle.render())
}

fn age(now: OffsetDateTime, then: OffsetDateTime) -> f64 {
    (now - then).as_seconds_f64().max(0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- metrics -->\n";
    const END: &str = "<!-- end metrics -->";

    /// docs/configuration.md's table of metrics is [`METRICS`]; `UPDATE_DOCS=1 cargo test -p
    /// tokendesk --lib docs_tables` rewrites it.
    #[test]
    fn docs_tables_list_every_metric() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let docs = std::fs::read_to_string(&path).unwrap();
        let start = docs.find(BEGIN).expect("the metrics marker") + BEGIN.len();
        let end = start + docs[start..].find(END).expect("the end marker");
        let made = format!("{}{}{}", &docs[..start], docs_table(), &docs[end..]);
        if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
            std::fs::write(&path, &made).unwrap();
            return;
        }
        assert!(
            made == docs,
            "docs/configuration.md lists other metrics than METRICS; run UPDATE_DOCS=1 cargo test -p tokendesk --lib docs_tables"
        );
    }

    /// Every name recorded in the code is declared (a name only in the code would export
    /// without a description and be missing from the docs).
    #[test]
    fn every_recorded_metric_is_declared() {
        let sources = [
            include_str!("telemetry.rs"),
            include_str!("../../canvas/src/client.rs"),
        ];
        for source in sources {
            for (at, _) in source.match_indices("\"tokendesk_") {
                let name: String = source[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name == "tokendesk_" {
                    continue; // this test's own pattern
                }
                assert!(
                    METRICS.iter().any(|m| m.name == name),
                    "{name} is recorded but not in METRICS"
                );
            }
        }
    }
}
