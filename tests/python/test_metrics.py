"""`/metrics` scraped with Prometheus's own parser (prometheus_client) after a scripted story.

Starts the Canvas simulator and `tokendesk serve` with `metrics.listen` (an address of its own)
and `metrics.bearer_key_file` (the main address, behind the key), goes through a story over the
JSON API (two requests: one approved and issued, one denied; status look-ups), then reads both
scrapes and checks the numbers: requests, tokens and envelopes by state, HTTP requests by route
and status with their latency histogram, Canvas calls by endpoint and outcome, the last
X-Rate-Limit-Remaining, emails sent, the queues, the status look-up cache and the audit chain.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from test_api_fuzz import SIM_ADMIN_TOKEN, Process, call, free_port
from test_canvasapi import _binary

METRICS_KEY = "metrics-key-for-the-test-0123456789abcdef"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("tokendesk-metrics")
    sim = Process([str(_binary()), "canvas-sim", "--listen", "127.0.0.1:0"], tmp / "sim.log")
    sim_url = sim.wait_for(r"canvas-sim listening on (http://\S+)").group(1)
    key_file = tmp / "metrics.key"
    key_file.write_text(METRICS_KEY + "\n")
    key_file.chmod(0o600)
    config = tmp / "tokendesk.toml"
    config.write_text(f"""
listen = "127.0.0.1:{free_port()}"
database_url = "sqlite://{tmp / 'tokendesk.db'}"

[canvas]
url = "{sim_url}"
admin_token = "{SIM_ADMIN_TOKEN}"

[roles]
approvers = ["ada.admin"]

[metrics]
listen = "127.0.0.1:0"
bearer_key_file = "{key_file}"
""")
    server = Process([str(_binary()), "serve", "--config", str(config)], tmp / "serve.log")
    url = server.wait_for(r"tokendesk listening on (http://\S+)").group(1)
    metrics_url = server.wait_for(r"metrics on (http://[^/\s]+)").group(1)
    try:
        yield url, metrics_url, tmp / "serve.log"
    finally:
        server.stop()
        sim.stop()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample, by name and labels (the parser fails on anything that is not the format)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(all_samples, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    assert key in all_samples, f"no sample {name}{labels}; have: " + ", ".join(
        sorted(f"{n}{dict(l)}" for n, l in all_samples if n == name))
    return all_samples[key]


def story(url: str) -> int:
    expires = (date.today() + timedelta(days=30)).isoformat()
    r = call(url, "sam.student", "POST", "/requests",
             {"purpose": "nightly grade export for my sections", "expires_on": expires})
    assert r.status_code == 201, r.text
    issued_id = r.json()["id"]
    r = call(url, "ada.admin", "POST", f"/requests/{issued_id}/approve", {})
    assert r.status_code == 200, r.text
    r = call(url, "stella.student", "POST", "/requests",
             {"purpose": "a dashboard of my course's submissions", "expires_on": expires})
    assert r.status_code == 201, r.text
    r = call(url, "ada.admin", "POST", f"/requests/{r.json()['id']}/deny",
             {"reason": "please ask your teacher to request it for the course"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while call(url, "sam.student", "GET", f"/requests/{issued_id}").json()["state"] != "issued":
        assert time.monotonic() < deadline, "the request was never issued"
        time.sleep(0.2)
    return issued_id


def test_metrics_after_a_story(service):
    url, metrics_url, _ = service
    story(url)
    # The emails (the delivery, the denial) go out in the background.
    deadline = time.monotonic() + 30
    while True:
        m = samples(requests.get(f"{metrics_url}/metrics", timeout=10).text)
        if m.get(("tokendesk_queue_waiting", frozenset({("queue", "emails")}))) == 0:
            break
        assert time.monotonic() < deadline, "the emails were never sent"
        time.sleep(0.2)

    r = requests.get(f"{metrics_url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = samples(r.text)

    assert value(m, "tokendesk_requests", state="issued") == 1
    assert value(m, "tokendesk_requests", state="denied") == 1
    assert value(m, "tokendesk_requests", state="submitted") == 0
    assert value(m, "tokendesk_tokens", state="pending") == 1
    assert value(m, "tokendesk_envelopes", state="sealed") == 1

    assert value(m, "tokendesk_http_requests_total", method="POST", route="/api/v1/requests", status="201") == 2
    assert value(m, "tokendesk_http_requests_total", method="POST", route="/api/v1/requests/{id}/approve", status="200") == 1
    polls = value(m, "tokendesk_http_requests_total", method="GET", route="/api/v1/requests/{id}", status="200")
    assert polls >= 1
    assert value(m, "tokendesk_http_request_duration_seconds_count", method="GET", route="/api/v1/requests/{id}") == polls
    assert value(m, "tokendesk_http_request_duration_seconds_bucket", method="GET", route="/api/v1/requests/{id}", le="+Inf") == polls
    # The status look-ups were answered from the cache or the database, each counted once.
    assert value(m, "tokendesk_view_cache_hits_total") + value(m, "tokendesk_view_cache_misses_total") >= polls

    assert value(m, "tokendesk_canvas_requests_total", endpoint="POST /api/v1/users/:id/tokens", outcome="ok") == 1
    assert value(m, "tokendesk_canvas_request_duration_seconds_count", endpoint="POST /api/v1/users/:id/tokens") == 1
    assert 0 < value(m, "tokendesk_canvas_rate_limit_remaining") <= 700
    assert ("tokendesk_canvas_throttled_total", frozenset()) not in m or value(m, "tokendesk_canvas_throttled_total") == 0

    assert value(m, "tokendesk_emails_sent_total") >= 2
    assert value(m, "tokendesk_queue_waiting", queue="emails") == 0
    # An email given up is counted once, as a failure not to be retried or as a notice no
    # longer needed (the approvers' digest, when the request was decided before its turn).
    given_up = sum(v for (n, labels), v in m.items()
                   if n == "tokendesk_email_failures_total" and ("retry", "no") in labels)
    dropped = m.get(("tokendesk_emails_dropped_total", frozenset()), 0)
    assert value(m, "tokendesk_queue_dead", queue="emails") == given_up + dropped
    assert value(m, "tokendesk_queue_oldest_age_seconds", queue="emails") == 0
    assert value(m, "tokendesk_queue_dead", queue="jobs") == 0
    # submit ×2, approve, issue, deny at the least.
    assert value(m, "tokendesk_audit_events") >= 5


def test_the_main_address_serves_metrics_only_to_the_key(service):
    url, _, _ = service
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
    r = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    # A person signed in through the proxy is not the monitoring system.
    assert requests.get(f"{url}/metrics", headers={"X-Remote-User": "ada.admin"}, timeout=10).status_code == 401
    r = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=10)
    assert r.status_code == 200
    assert "tokendesk_requests{" in r.text


def test_the_log_has_a_line_per_request_and_per_event(service):
    """By default (no TOKENDESK_LOG): one line per request with its id, route, status and
    login; one per audit event (the workers' too), naming ids; one per email sent."""
    url, _, log_path = service
    r = call(url, "rita.researcher", "GET", "/requests/999999")
    assert r.status_code == 404
    request_id = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:
        log = log_path.read_text()
        lines = [l for l in log.splitlines() if f"request.id={request_id}" in l]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 1, log[-3000:]
    assert "route=/api/v1/requests/{id}" in lines[0] and "status=404" in lines[0], lines[0]
    assert 'login="rita.researcher"' in lines[0] or "login=rita.researcher" in lines[0], lines[0]
    for action in ["request.submit", "request.approve", "request.issue", "request.deny"]:
        assert f"action={action}" in log, f"{action} not logged:\n{log[-3000:]}"
    assert "email sent" in log
    assert "panicked" not in log
