"""nginx in front of tokendesk, configured exactly as docs/deploy.md says ("nginx in front").

The location blocks are read from docs/deploy.md, between `# --- tokendesk locations: begin ---`
and `# --- tokendesk locations: end ---`, so the documentation and this test cannot drift apart;
only the upstream port is replaced. nginx runs as a child process (as `nobody` when the tests
run as root) with a temporary prefix, on a free loopback port, with `auth_basic` standing in
for the campus sign-in (it sets `$remote_user`), in front of `tokendesk serve` in trusted-header
mode trusting 127.0.0.1 only.

tokendesk has `auth.proxy_secret` (as the package configures it), which the documented
locations send. Shown: a client's own `X-Remote-User: ada.admin` is replaced by the person nginx
signed in, on `/` and under `/api/`; without the secret (straight to tokendesk) the header is
worthless; without credentials nginx answers 401 and tokendesk is never asked; a
client's `X-Forwarded-For` is not the address tokendesk records in the audit trail. And why the
documentation's rules matter: with `$proxy_add_x_forwarded_for` the client picks the recorded
address, and with the headers set once at the server level a location with a
`proxy_set_header` of its own lets a client's `X-Remote-User` through (an impersonation
without a proxy secret, a signed-out request with one). Last, `nginx -t` accepts
the whole documented site (TLS included, with a throwaway certificate).

Needs nginx (`apt-get install nginx`; .ci/run installs it): skipped without it, failed in CI.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from test_api_fuzz import SIM_ADMIN_TOKEN, Process, free_port
from test_canvasapi import REPO_ROOT, _binary

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
BEGIN = "# --- tokendesk locations: begin ---"
END = "# --- tokendesk locations: end ---"
# What the documentation proxies to (tokendesk's `listen`); the test's tokendesk port replaces it.
DOC_UPSTREAM = "http://127.0.0.1:8080"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SPOOFED_ADDR = "203.0.113.9"
# auth.proxy_secret, as the package makes it (32 random bytes, base64), and the header it
# travels in (auth.proxy_secret_header's default).
PROXY_SECRET = "c2VjcmV0LW9mLXRoZS1wcm94eS1pbi1mcm9udC0xMjM0NTY3OA=="
SECRET_HEADER = "X-Tokendesk-Proxy-Secret"
# The simulator's seeded people (a request needs its requester in Canvas), with passwords for
# nginx's basic auth.
PEOPLE = {
    "ada.admin": "ada-secret",
    "sam.student": "sam-secret",
    "stella.student": "stella-secret",
    "theo.teacher": "theo-secret",
}


def documented_locations() -> str:
    text = DEPLOY_MD.read_text()
    start = text.index(BEGIN)
    end = text.index(END, start) + len(END)
    snippet = text[start:end]
    assert DOC_UPSTREAM in snippet, f"the documented locations no longer proxy to {DOC_UPSTREAM}"
    return snippet


def documented_site() -> str:
    """The whole documented site file: the ```nginx block that holds the locations."""
    text = DEPLOY_MD.read_text()
    for block in re.findall(r"```nginx\n(.*?)```", text, re.S):
        if BEGIN in block:
            return block
    raise AssertionError("docs/deploy.md has no ```nginx block with the tokendesk locations")


@pytest.fixture(scope="module", autouse=True)
def needs_nginx():
    if not os.access(NGINX, os.X_OK):
        message = f"nginx is not installed ({NGINX}): apt-get install nginx"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def start_tokendesk(tmp: Path, secret: str | None):
    """`tokendesk serve` in trusted-header mode trusting 127.0.0.1, in front of the simulator;
    yields (its URL, its port)."""
    sim = Process([str(_binary()), "canvas-sim", "--listen", "127.0.0.1:0"], tmp / "sim.log")
    sim_url = sim.wait_for(r"canvas-sim listening on (http://\S+)").group(1)
    port = free_port()
    proxy_secret = ""
    if secret:
        (tmp / "proxy-secret").write_text(secret + "\n")
        (tmp / "proxy-secret").chmod(0o600)
        proxy_secret = f'proxy_secret_file = "{tmp / "proxy-secret"}"'
    config = tmp / "tokendesk.toml"
    config.write_text(f"""
listen = "127.0.0.1:{port}"
database_url = "sqlite://{tmp / 'tokendesk.db'}"

[canvas]
url = "{sim_url}"
admin_token = "{SIM_ADMIN_TOKEN}"

[auth]
mode = "trusted-header"
header = "X-Remote-User"
trusted_proxies = ["127.0.0.1/32"]
{proxy_secret}

[roles]
approvers = ["ada.admin"]
auditors = ["ada.admin"]
admins = ["ada.admin"]
""")
    server = Process([str(_binary()), "serve", "--config", str(config)], tmp / "serve.log")
    url = server.wait_for(r"tokendesk listening on (http://\S+)").group(1)
    try:
        yield url, port
    finally:
        server.stop()
        sim.stop()


@pytest.fixture(scope="module")
def tokendesk(tmp_path_factory):
    """As the package configures it: with auth.proxy_secret."""
    yield from start_tokendesk(tmp_path_factory.mktemp("tokendesk-nginx"), PROXY_SECRET)


@pytest.fixture(scope="module")
def tokendesk_without_secret(tmp_path_factory):
    yield from start_tokendesk(tmp_path_factory.mktemp("tokendesk-nginx-nosecret"), None)


class Nginx:
    """nginx with a temporary prefix, one server on a free loopback port, auth_basic in force."""

    def __init__(self, server_body: str):
        self.prefix = Path(tempfile.mkdtemp(prefix="tokendesk-nginx-"))
        self.port = free_port()
        (self.prefix / "tmp").mkdir()
        (self.prefix / "htpasswd").write_text(
            "".join(f"{who}:{{PLAIN}}{password}\n" for who, password in PEOPLE.items()))
        (self.prefix / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {self.prefix}/access.log;
    client_body_temp_path {self.prefix}/tmp/body;
    proxy_temp_path {self.prefix}/tmp/proxy;
    fastcgi_temp_path {self.prefix}/tmp/fastcgi;
    uwsgi_temp_path {self.prefix}/tmp/uwsgi;
    scgi_temp_path {self.prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        # The campus sign-in, as the documentation requires one: it sets $remote_user.
        auth_basic "tokendesk test";
        auth_basic_user_file {self.prefix}/htpasswd;
        # What the documented include file holds.
        set $tokendesk_proxy_secret "{PROXY_SECRET}";
{server_body}
    }}
}}
""")
        self.proc = subprocess.Popen(
            nginx_command(self.prefix, "-p", f"{self.prefix}/", "-c", f"{self.prefix}/nginx.conf",
                          "-e", f"{self.prefix}/error.log"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        log = self.log()
        self.stop()
        pytest.fail(f"nginx did not start: {log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        err = ""
        if self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read()
        path = self.prefix / "error.log"
        return err + (path.read_text()[-3000:] if path.exists() else "")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def nginx_command(prefix: Path, *args: str) -> list[str]:
    """nginx never runs as root here: as root, it is started as `nobody`, owning its prefix."""
    if os.geteuid() != 0:
        return [NGINX, *args]
    nobody = pwd.getpwnam("nobody")
    for path in [prefix, *prefix.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
            "--no-new-privs", "--", NGINX, *args]


@pytest.fixture(scope="module")
def started():
    running: list[Nginx] = []

    def start(server_body: str) -> Nginx:
        nginx = Nginx(server_body)
        running.append(nginx)
        return nginx

    yield start
    for nginx in running:
        nginx.stop()


def as_documented(tokendesk, started, replace: tuple[str, str] | None = None) -> Nginx:
    _, port = tokendesk
    locations = documented_locations().replace(DOC_UPSTREAM, f"http://127.0.0.1:{port}")
    if replace:
        assert replace[0] in locations
        locations = locations.replace(*replace)
    return started(locations)


@pytest.fixture(scope="module")
def nginx(tokendesk, started) -> Nginx:
    return as_documented(tokendesk, started)


def get(url: str, who: str | None, spoof: dict[str, str] | None = None) -> requests.Response:
    auth = (who, PEOPLE[who]) if who else None
    return requests.get(url, auth=auth, headers=spoof or {}, timeout=30, allow_redirects=False)


def submit(base: str, who: str, headers: dict[str, str]) -> requests.Response:
    """A token request through nginx: tokendesk records it (and the client address) in the trail."""
    expires = (date.today() + timedelta(days=30)).isoformat()
    return requests.post(f"{base}/api/v1/requests", auth=(who, PEOPLE[who]), headers=headers,
                         json={"purpose": "nightly grade export for my sections",
                               "expires_on": expires}, timeout=30)


def recorded_addresses(tokendesk, who: str) -> set[str | None]:
    """The client addresses of `who`'s audit events, read from tokendesk directly (as the
    auditor ada.admin, from loopback: trusted)."""
    url, _ = tokendesk
    r = requests.get(f"{url}/api/v1/audit", params={"actor": who},
                     headers={"X-Remote-User": "ada.admin", SECRET_HEADER: PROXY_SECRET},
                     timeout=30)
    assert r.status_code == 200, r.text
    events = r.json()
    assert events, f"no audit events of {who}"
    return {e["client_addr"] for e in events}


def test_nginx_replaces_a_client_sent_login_header_in_every_location(nginx):
    spoof = {"X-Remote-User": "ada.admin"}
    # Under /api/ (its own location block).
    r = get(f"{nginx.url}/api/v1/me", "sam.student", spoof)
    assert r.status_code == 200, r.text
    assert r.json()["login"] == "sam.student"
    assert r.json()["roles"] == ["requester"]
    # Under / (the pages): the approvers' queue is ada's, not sam's, whatever sam sends.
    r = get(f"{nginx.url}/queue", "sam.student", spoof)
    assert r.status_code == 403, (r.status_code, r.text[:500])
    r = get(f"{nginx.url}/queue", "ada.admin")
    assert r.status_code == 200, (r.status_code, r.text[:500])
    # The same header in another letter case is the same header to nginx.
    r = get(f"{nginx.url}/api/v1/me", "sam.student", {"x-remote-user": "ada.admin"})
    assert r.json()["login"] == "sam.student"


def test_only_requests_through_nginx_carry_the_proxy_secret(tokendesk, nginx):
    """From the proxy's own address, without the secret, the login header counts for nothing:
    another local account cannot connect to tokendesk and be anyone."""
    url, _ = tokendesk
    direct = requests.get(f"{url}/api/v1/me", headers={"X-Remote-User": "ada.admin"}, timeout=30)
    assert direct.status_code == 401, direct.text
    wrong = requests.get(f"{url}/api/v1/me", timeout=30,
                         headers={"X-Remote-User": "ada.admin", SECRET_HEADER: "a" * 44})
    assert wrong.status_code == 401, wrong.text
    # A client cannot send its own secret through nginx either: nginx replaces the header.
    r = get(f"{nginx.url}/api/v1/me", "sam.student", {SECRET_HEADER: "a" * 44})
    assert r.status_code == 200 and r.json()["login"] == "sam.student", r.text


def test_without_credentials_nginx_answers_401_and_tokendesk_is_not_asked(nginx):
    spoof = {"X-Remote-User": "ada.admin"}
    for path in ["/api/v1/me", "/queue", "/"]:
        r = get(f"{nginx.url}{path}", None, spoof)
        assert r.status_code == 401, (path, r.status_code, r.text[:300])
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers
        assert "nginx" in r.text, r.text[:300]
    r = requests.get(f"{nginx.url}/api/v1/me", auth=("sam.student", "wrong"), headers=spoof,
                     timeout=30)
    assert r.status_code == 401


def test_a_client_sent_forwarded_for_does_not_reach_tokendesk(tokendesk, nginx):
    r = submit(nginx.url, "sam.student", {"X-Forwarded-For": SPOOFED_ADDR})
    assert r.status_code == 201, r.text
    assert recorded_addresses(tokendesk, "sam.student") == {"127.0.0.1"}


def test_with_proxy_add_x_forwarded_for_the_client_would_choose_its_address(tokendesk, started):
    """Why the documentation says `$remote_addr`: the client here is inside trusted_proxies (as
    anyone on the proxy's host, or on a listed network, is), and the appended header lets it
    name the address tokendesk records."""
    wrong = as_documented(tokendesk, started, (
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"))
    r = submit(wrong.url, "stella.student", {"X-Forwarded-For": SPOOFED_ADDR})
    assert r.status_code == 201, r.text
    assert recorded_addresses(tokendesk, "stella.student") == {SPOOFED_ADDR}


def inheriting(port: int) -> str:
    """The headers written once at the server level, and /api/ with one of its own."""
    return f"""
        proxy_set_header X-Remote-User $remote_user;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header {SECRET_HEADER} $tokendesk_proxy_secret;
        location / {{
            proxy_pass http://127.0.0.1:{port};
        }}
        location /api/ {{
            proxy_pass http://127.0.0.1:{port};
            proxy_set_header Connection "";
        }}
"""


def test_a_location_with_its_own_proxy_set_header_inherits_none(
        tokendesk, tokendesk_without_secret, started):
    """Why the documentation sets the headers in every location: set once at the server level,
    they vanish from a location with any proxy_set_header of its own. Without a proxy secret
    that is an impersonation; with one, a broken /api/."""
    spoof = {"X-Remote-User": "ada.admin"}
    wrong = started(inheriting(tokendesk_without_secret[1]))
    assert get(f"{wrong.url}/queue", "theo.teacher", spoof).status_code == 403
    r = get(f"{wrong.url}/api/v1/me", "theo.teacher", spoof)
    assert r.status_code == 200, r.text
    assert r.json()["login"] == "ada.admin", "the inheritance trap is gone? then relax deploy.md"
    wrong = started(inheriting(tokendesk[1]))
    assert get(f"{wrong.url}/queue", "theo.teacher", spoof).status_code == 403
    assert get(f"{wrong.url}/api/v1/me", "theo.teacher", spoof).status_code == 401


def self_signed(directory: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokendesk.example.edu")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .sign(key, hashes.SHA256()))
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def test_nginx_accepts_the_whole_documented_site():
    """`nginx -t` on the documented site file (TLS and all), with a throwaway certificate."""
    prefix = Path(tempfile.mkdtemp(prefix="tokendesk-nginx-t-"))
    try:
        (prefix / "tmp").mkdir()
        self_signed(prefix)
        # nginx -t binds the listening sockets: free loopback ports stand in for 80 and 443
        # (the IPv6 lines go, the machine may have no IPv6).
        ports = {"80": str(free_port()), "443": str(free_port())}
        (prefix / "tokendesk-proxy-secret.conf").write_text(
            f'set $tokendesk_proxy_secret "{PROXY_SECRET}";\n')
        site = (documented_site()
                .replace("/etc/ssl/tokendesk/", f"{prefix}/")
                .replace("/etc/nginx/tokendesk.htpasswd", f"{prefix}/htpasswd")
                .replace("/etc/nginx/tokendesk-proxy-secret.conf",
                         f"{prefix}/tokendesk-proxy-secret.conf"))
        site = re.sub(r"^\s*listen \[::\]:.*$", "", site, flags=re.M)
        site = re.sub(r"listen (80|443)\b", lambda m: f"listen 127.0.0.1:{ports[m.group(1)]}", site)
        assert site.count("listen 127.0.0.1:") == 2, site
        (prefix / "nginx.conf").write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{site}
}}
""")
        run = subprocess.run(
            nginx_command(prefix, "-t", "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf",
                          "-e", f"{prefix}/error.log"),
            capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        assert "syntax is ok" in run.stderr, run.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
