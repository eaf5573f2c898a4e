"""Fuzzing the JSON API with schemathesis, from its own OpenAPI document (issue 10).

Starts the Canvas simulator (`tokendesk canvas-sim`) and `tokendesk serve` in front of it
(trusted-header sign-in from loopback, SQLite in a temporary directory, the abuse limits off so
that the fuzzer reaches the handlers), puts something in it (an issued request, its envelope,
mail, audit events), then runs `st run` against `/api/openapi.json` twice: as a requester
(`sam.student`) and as an admin who holds every role (`ada.admin`).

Checks: every schemathesis check except two that do not apply here:
- `ignored_auth`: in trusted-header mode any login the proxy vouches for is a requester, so
  there is no "invalid credential" for the fuzzer to try (the proxy is the authentication);
- `positive_data_acceptance`: a schema-valid body can still break a rule that depends on today
  (`expires_on` from tomorrow to 120 days ahead) or on the data (one open request per person).
So: no server errors, no status, header, content type or body outside the document, invalid
input always refused, no answers after a delete that should be gone.

Bounded in time: `API_FUZZ_SECONDS` per role, 45 in CI (`CI=true`), 120 otherwise.
The figures (cases generated, passed, failed) are printed and written to
`test-artifacts/schemathesis/`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from test_canvasapi import REPO_ROOT, _binary

# The simulator's documented default admin token (its default seed's user 1, `ada.admin`).
SIM_ADMIN_TOKEN = "kAh2Ez6rU24NnHf9Z7N4PEtnwN3rmYRFmrTZ3eW3rxABTJFKXyvTrV2Xcmu6LZR7"
ROLES = ["sam.student", "ada.admin"]
EXCLUDED_CHECKS = "ignored_auth,positive_data_acceptance"


def fuzz_seconds() -> int:
    if raw := os.environ.get("API_FUZZ_SECONDS"):
        return int(raw)
    return 45 if os.environ.get("CI") == "true" else 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose stdout lines are read in the background."""

    def __init__(self, args: list[str], log: Path):
        self.log = open(log, "w+")
        # tokendesk refuses TOKENDESK_* variables it does not know (a typo is an error), and
        # the test runner sets TOKENDESK_BIN: the service gets only the configuration file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENDESK_")}
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line == "":
                break
            if m := re.search(pattern, line):
                return m
        self.log.flush()
        self.log.seek(0)
        log = self.log.read()[-2000:]
        self.stop()
        pytest.fail(f"{pattern!r} never appeared: {log}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("tokendesk-fuzz")
    sim = Process([str(_binary()), "canvas-sim", "--listen", "127.0.0.1:0"], tmp / "sim.log")
    sim_url = sim.wait_for(r"canvas-sim listening on (http://\S+)").group(1)
    port = free_port()
    config = tmp / "tokendesk.toml"
    config.write_text(f"""
listen = "127.0.0.1:{port}"
database_url = "sqlite://{tmp / 'tokendesk.db'}"

[canvas]
url = "{sim_url}"
admin_token = "{SIM_ADMIN_TOKEN}"

[roles]
approvers = ["ada.admin"]
helpdesk = ["ada.admin"]
auditors = ["ada.admin"]
admins = ["ada.admin"]

[limits]
submissions_per_hour = 0
reveals_per_hour = 0
envelope_lookups_per_minute = 0
sign_ins_per_minute = 0
""")
    server = Process([str(_binary()), "serve", "--config", str(config)], tmp / "serve.log")
    url = server.wait_for(r"tokendesk listening on (http://\S+)").group(1)
    try:
        seed(url)
        yield url, tmp / "serve.log"
    finally:
        server.stop()
        sim.stop()


def call(url: str, who: str, method: str, path: str, body=None) -> requests.Response:
    return requests.request(method, f"{url}/api/v1{path}", json=body,
                            headers={"X-Remote-User": who}, timeout=30)


def seed(url: str):
    """An issued request of sam's (a token, an envelope, mail, audit events) and a waiting one
    of stella's, so that the lists the fuzzer reads are not empty."""
    expires = (date.today() + timedelta(days=30)).isoformat()
    r = call(url, "sam.student", "POST", "/requests",
             {"purpose": "nightly grade export for my sections", "expires_on": expires})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    r = call(url, "ada.admin", "POST", f"/requests/{request_id}/approve", {})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while call(url, "sam.student", "GET", f"/requests/{request_id}").json()["state"] != "issued":
        assert time.monotonic() < deadline, "the request was never issued"
        time.sleep(0.2)
    r = call(url, "stella.student", "POST", "/requests",
             {"purpose": "a dashboard of my course's submissions", "expires_on": expires})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("who", ROLES)
def test_the_api_answers_every_generated_request_within_its_document(service, who):
    url, serve_log = service
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    reports = REPO_ROOT / "test-artifacts" / "schemathesis" / who
    reports.mkdir(parents=True, exist_ok=True)
    seconds = fuzz_seconds()
    started = time.monotonic()
    run = subprocess.run(
        [st, "run", f"{url}/api/openapi.json",
         "--header", f"X-Remote-User: {who}",
         "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
         # One worker: schemathesis on Python 3.11 with threads can hit a CPython AST bug
         # ("AST constructor recursion depth mismatch") in its own code.
         "--max-time", str(seconds), "--workers", "1",
         "--report", "ndjson,junit", "--report-dir", str(reports),
         "--no-color"],
        capture_output=True, text=True, timeout=seconds + 300, cwd=reports,
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    counts = re.search(r"(\d+) generated, (.*)", output)
    figures = counts.group(0) if counts else "no figures"
    summary = f"schemathesis as {who}: {figures} in {elapsed:.0f}s (budget {seconds}s)"
    print(summary)
    (reports / "summary.txt").write_text(summary + "\n\n" + output)
    assert run.returncode == 0, f"{summary}\n{output[-6000:]}"
    generated = int(counts.group(1)) if counts else 0
    assert generated >= 100, f"too few cases to say anything: {summary}"
    # No panic or internal error reached the log either.
    log = serve_log.read_text()
    assert "panicked" not in log, log[-3000:]
