"""Tokens issued by tokendesk, checked with the real canvasapi client (canvas-api.md §6).

Starts `tokendesk demo` (the service with its built-in Canvas simulator, demo sign-in and the
mailbox transport) on free ports, then goes through the process over the JSON API: a student
requests a token, the approver approves, the link arrives in the mailbox, the student reveals the
envelope and decrypts it with the key from the link (AES-GCM, as the browser does). The token is
pending in Canvas, so canvasapi gets InvalidAccessToken; once the student activates it on the
simulator's settings page it works; once the help desk revokes it, InvalidAccessToken again.
"""

from __future__ import annotations

import base64
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from canvasapi import Canvas
from canvasapi.exceptions import InvalidAccessToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from test_canvasapi import _binary

pytestmark = pytest.mark.filterwarnings("ignore:Canvas may respond unexpectedly:UserWarning")


@dataclass
class Demo:
    url: str
    canvas_url: str
    process: subprocess.Popen


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("tokendesk-demo")
    stderr = open(tmp / "demo.stderr", "w+")
    process = subprocess.Popen(
        [str(_binary()), "demo", "--dir", str(tmp / "data"),
         "--listen", "127.0.0.1:0", "--canvas-listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain():
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    url = canvas_url = None
    try:
        deadline = time.monotonic() + 30
        while (url is None or canvas_url is None) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line == "":
                break
            if m := re.search(r"tokendesk demo running at (http://\S+?)/?$", line.strip()):
                url = m.group(1)
            if m := re.search(r"Canvas simulator:\s+(http://[^/\s]+)", line):
                canvas_url = m.group(1)
        if url is None or canvas_url is None:
            process.kill()
            process.wait()
            stderr.seek(0)
            pytest.fail(f"tokendesk demo did not start: {stderr.read()}")
        yield Demo(url=url, canvas_url=canvas_url, process=process)
    finally:
        process.kill()
        process.wait()
        stderr.close()


def signed_in(demo: Demo, login: str) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{demo.url}/demo/login", data={"login": login}, allow_redirects=False)
    assert r.status_code == 303, r.text
    return s


def api(session: requests.Session, demo: Demo, method: str, path: str, body=None):
    r = session.request(method, f"{demo.url}/api/v1{path}", json=body if body is not None else ({} if method == "POST" else None))
    return r


def wait_for(check, what: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_a_token_issued_by_tokendesk_works_with_canvasapi_only_while_live(demo):
    sam = signed_in(demo, "sam.student")
    ada = signed_in(demo, "ada.admin")
    theo = signed_in(demo, "theo.teacher")

    expires = (date.today() + timedelta(days=30)).isoformat()
    r = api(sam, demo, "POST", "/requests", {"purpose": "nightly grade export for my sections", "expires_on": expires})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    r = api(ada, demo, "POST", f"/requests/{request_id}/approve", {})
    assert r.status_code == 200, r.text

    issued = wait_for(
        lambda: (lambda j: j if j["state"] == "issued" else None)(api(sam, demo, "GET", f"/requests/{request_id}").json()),
        "the token to be issued",
    )
    message = wait_for(
        lambda: next((m for m in api(ada, demo, "GET", "/mailbox?to=sam.student").json() if "/e/" in m["text"]), None),
        "the delivery email",
    )
    link = re.search(r"(http://\S+/e/([A-Za-z0-9_-]+)#([A-Za-z0-9_-]+))", message["text"])
    assert link, message["text"]
    envelope_id, key = link.group(2), link.group(3)
    assert envelope_id == issued["envelope_id"]

    r = api(sam, demo, "POST", f"/envelopes/{envelope_id}/reveal", {})
    assert r.status_code == 200, r.text
    sealed = r.json()
    value = AESGCM(b64url(key)).decrypt(b64url(sealed["nonce"]), b64url(sealed["ciphertext"]), envelope_id.encode()).decode()
    assert len(value) == 64

    # Pending until its owner activates it in Canvas.
    with pytest.raises(InvalidAccessToken):
        Canvas(demo.canvas_url, value).get_current_user()

    token = api(sam, demo, "GET", f"/tokens/{issued['token_id']}").json()
    browser = requests.Session()
    browser.get(f"{demo.canvas_url}/login?as=sam.student")
    # Canvas's CSRF check (canvas-api.md §1): the _csrf_token cookie goes back as X-CSRF-Token.
    r = browser.post(
        f"{demo.canvas_url}/profile/tokens/{token['canvas_token_id']}/activate",
        headers={"Accept": "application/json", "X-CSRF-Token": browser.cookies["_csrf_token"]},
    )
    assert r.status_code == 200, r.text
    me = Canvas(demo.canvas_url, value).get_current_user()
    # A student's own profile has no login_id (canvas-api.md §2): the name and id say who.
    assert me.name == "Sam Student"
    assert me.id == token["canvas_user_id"]

    r = api(theo, demo, "POST", f"/tokens/{issued['token_id']}/revoke", {"reason": "rotating all tokens for the term"})
    assert r.status_code == 200, r.text
    with pytest.raises(InvalidAccessToken) as revoked:
        Canvas(demo.canvas_url, value).get_current_user()
    assert "Revoked access token." in str(revoked.value)
