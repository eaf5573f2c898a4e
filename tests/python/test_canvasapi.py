"""The Canvas simulator (`tokendesk canvas-sim`) against the real canvasapi client.

canvas-api.md §6: canvasapi is the most used Canvas client; a token that works (or fails) with it
against the simulator should do the same against Canvas. Each test module run starts the
simulator binary on a free port with a seed written here, and stops it afterwards.

The binary is `$TOKENDESK_BIN`, by default `target/debug/tokendesk` in the repository
(`cargo build -p tokendesk`).
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from canvasapi import Canvas
from canvasapi.account import Account
from canvasapi.exceptions import (
    Forbidden,
    InvalidAccessToken,
    RateLimitExceeded,
    ResourceDoesNotExist,
    Unauthorized,
)
from canvasapi.paginated_list import PaginatedList
from canvasapi.user import User
from canvasapi.util import combine_kwargs

REPO_ROOT = Path(__file__).resolve().parents[2]

# canvasapi warns about every http:// base URL; the simulator is loopback-only plain HTTP.
pytestmark = pytest.mark.filterwarnings("ignore:Canvas may respond unexpectedly:UserWarning")

ADMIN_TOKEN = "AdminToken0123456789abcdefXYZ"
STUDENT_TOKEN = "StudentToken0123456789abcdef"
OTHER_STUDENT_TOKEN = "OtherStudentToken0123456789"
PENDING_TOKEN = "PendingToken0123456789abcdef"
DELETED_TOKEN = "DeletedToken0123456789abcdef"
EXPIRED_TOKEN = "ExpiredToken0123456789abcdef"

ADMIN = {"id": 1, "login_id": "ada.admin", "name": "Ada Admin"}
STUDENT = {"id": 2, "login_id": "sam.student", "name": "Sam Student"}
# A login that is an email address: `sis_login_id:` must carry the `@` through.
OTHER_STUDENT = {"id": 3, "login_id": "olga.other@example.edu", "name": "Olga Other"}

# Enough people matching one search term that canvasapi's own page size (100) spans two pages.
SEARCH_TERM = "zephyr"
SEARCHABLE = [
    {"id": 100 + i, "login_id": f"zephyr{i:03d}", "name": f"Zephyr Person{i:03d}"}
    for i in range(1, 121)
]


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _user_toml(user: dict, *, admin=False, roles=(), tokens=(), sis=None) -> str:
    lines = [
        "[[users]]",
        f"id = {user['id']}",
        f"name = {_toml_str(user['name'])}",
        f"login_id = {_toml_str(user['login_id'])}",
        f"email = {_toml_str(user['login_id'].split('@')[0] + '@example.edu')}",
        f"admin = {'true' if admin else 'false'}",
        "roles = [" + ", ".join(_toml_str(r) for r in roles) + "]",
        "tokens = [" + ", ".join(tokens) + "]",
    ]
    if sis:
        lines.append(f"sis_user_id = {_toml_str(sis)}")
    return "\n".join(lines) + "\n"


def seed_toml() -> str:
    parts = [
        _user_toml(ADMIN, admin=True, tokens=[_toml_str(ADMIN_TOKEN)], sis="A0001"),
        _user_toml(
            STUDENT,
            roles=["student"],
            sis="S0002",
            tokens=[
                _toml_str(STUDENT_TOKEN),
                f'{{ value = "{PENDING_TOKEN}", purpose = "made by an admin", state = "pending" }}',
                f'{{ value = "{DELETED_TOKEN}", purpose = "revoked", state = "deleted" }}',
                f'{{ value = "{EXPIRED_TOKEN}", purpose = "old", expires_at = "2020-01-01T00:00:00Z" }}',
            ],
        ),
        _user_toml(OTHER_STUDENT, roles=["student"], tokens=[_toml_str(OTHER_STUDENT_TOKEN)]),
    ]
    parts += [_user_toml(u, roles=["student"]) for u in SEARCHABLE]
    return "\n".join(parts)


@dataclass
class Sim:
    url: str
    process: subprocess.Popen


def _binary() -> Path:
    path = Path(os.environ.get("TOKENDESK_BIN", "target/debug/tokendesk"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.fail(f"{path} does not exist: run `cargo build -p tokendesk` or set TOKENDESK_BIN")
    return path


def _start_sim(tmp_path: Path, *extra: str):
    """Starts the simulator; yields a Sim; stops it (the generator's cleanup)."""
    seed = tmp_path / "seed.toml"
    seed.write_text(seed_toml())
    stderr = open(tmp_path / "canvas-sim.stderr", "w+")
    process = subprocess.Popen(
        [str(_binary()), "canvas-sim", "--listen", "127.0.0.1:0", "--seed", str(seed), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    # Read the first line with a timeout, then keep draining stdout so that it never blocks.
    lines: queue.Queue[str] = queue.Queue()

    def drain():
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    try:
        try:
            first = lines.get(timeout=15)
        except queue.Empty:
            first = ""
        prefix = "canvas-sim listening on "
        if not first.startswith(prefix):
            process.kill()
            process.wait()
            stderr.seek(0)
            pytest.fail(
                f"canvas-sim did not start (exit {process.returncode}); first line {first!r}; "
                f"stderr: {stderr.read()}"
            )
        yield Sim(url=first[len(prefix) :].strip(), process=process)
    finally:
        process.kill()
        process.wait()
        stderr.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    yield from _start_sim(tmp_path_factory.mktemp("canvas-sim"))


SLOW = ("--throttle-hwm", "100", "--throttle-upfront", "50", "--latency-ms", "300")


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory):
    """A simulator with a tiny bucket and slow requests: two in flight at once is too many.
    It throttles with the default status, 429, as hosted Canvas has since 2025-10-08."""
    yield from _start_sim(tmp_path_factory.mktemp("canvas-sim-throttled"), *SLOW)


@pytest.fixture(scope="module")
def slow_sim_403(tmp_path_factory):
    """The same, throttling with 403 like older self-hosted instances (canvas-api.md §3)."""
    yield from _start_sim(
        tmp_path_factory.mktemp("canvas-sim-throttled-403"), *SLOW, "--throttle-status", "403"
    )


def canvas(sim: Sim, token: str) -> Canvas:
    return Canvas(sim.url, token)


def requester(client: Canvas):
    """canvasapi has no token endpoints; its requester sends them the way it sends everything."""
    return client._Canvas__requester


def sign_in(sim: Sim, login: str) -> requests.Session:
    """A browser session in the simulator; it sends Canvas's CSRF token (the `_csrf_token`
    cookie) back as `X-CSRF-Token`, as Canvas's page scripts do."""
    browser = requests.Session()
    r = browser.get(f"{sim.url}/login", params={"as": login}, allow_redirects=False)
    assert r.status_code == 303
    assert "canvas_sim_session" in browser.cookies
    browser.headers["X-CSRF-Token"] = browser.cookies["_csrf_token"]
    return browser


def count_requests(client: Canvas) -> list:
    """Records every HTTP response the client receives."""
    seen: list = []
    requester(client)._session.hooks["response"].append(lambda r, *a, **k: seen.append(r))
    return seen


def create_token(client: Canvas, user_id, purpose: str, expires_at=None) -> dict:
    token = {"purpose": purpose}
    if expires_at is not None:
        token["expires_at"] = expires_at
    response = requester(client).request(
        "POST", f"users/{user_id}/tokens", _kwargs=combine_kwargs(token=token)
    )
    assert response.status_code == 200, response.text
    return response.json()


def in_days(days: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=days)


# --- who am I ---------------------------------------------------------------------------------


def test_current_user_with_the_admin_token(sim):
    me = canvas(sim, ADMIN_TOKEN).get_current_user()
    assert me.id == ADMIN["id"]
    assert me.name == ADMIN["name"]
    assert me.login_id == ADMIN["login_id"]


def test_current_user_with_a_seeded_student_token(sim):
    me = canvas(sim, STUDENT_TOKEN).get_current_user()
    assert (me.id, me.name) == (STUDENT["id"], STUDENT["name"])
    # canvas-api.md §2: login_id, email and SIS ids only for admins, not on one's own profile.
    for field in ("login_id", "email", "sis_user_id"):
        assert not hasattr(me, field), field


# --- the admin-generated token life cycle ------------------------------------------------------


def test_admin_made_token_is_pending_until_the_student_activates_it(sim):
    admin = canvas(sim, ADMIN_TOKEN)
    created = create_token(admin, STUDENT["id"], "pytest: issued by an admin", in_days(30))
    assert created["workflow_state"] == "pending"
    assert created["user_id"] == STUDENT["id"]
    value = created["visible_token"]
    assert len(value) >= 64 and not value.endswith("..."), "the create response holds the full value"

    with pytest.raises(InvalidAccessToken):
        canvas(sim, value).get_current_user()

    # The student signs in to the web UI and activates it (a session route, not the API).
    browser = sign_in(sim, STUDENT["login_id"])
    activated = browser.post(
        f"{sim.url}/profile/tokens/{created['id']}/activate",
        headers={"Accept": "application/json"},
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["workflow_state"] == "active"

    me = canvas(sim, value).get_current_user()
    assert (me.id, me.name) == (STUDENT["id"], STUDENT["name"])


def test_activation_needs_the_owner_signed_in(sim):
    """canvas-api.md §1: a session route; without a session a browser goes to the login page,
    and Rails' CSRF check applies."""
    admin = canvas(sim, ADMIN_TOKEN)
    created = create_token(admin, STUDENT["id"], "pytest: not for the admin to activate")
    url = f"{sim.url}/profile/tokens/{created['id']}/activate"
    anonymous = requests.post(url, allow_redirects=False)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"] == "/login"
    # A script that asks for JSON gets Canvas's 401 instead.
    anonymous = requests.post(url, headers={"Accept": "application/json"}, allow_redirects=False)
    assert anonymous.status_code == 401
    # The owner's session without the CSRF token is refused.
    student = sign_in(sim, STUDENT["login_id"])
    del student.headers["X-CSRF-Token"]
    forged = student.post(url, headers={"Accept": "application/json"})
    assert forged.status_code == 422
    # The admin is not the owner: the token is not theirs to find.
    browser = sign_in(sim, ADMIN["login_id"])
    other = browser.post(
        f"{sim.url}/profile/tokens/{created['id']}/activate",
        headers={"Accept": "application/json"},
    )
    assert other.status_code == 404
    with pytest.raises(InvalidAccessToken):
        canvas(sim, created["visible_token"]).get_current_user()


def test_token_deleted_through_the_api_stops_working(sim):
    admin = canvas(sim, ADMIN_TOKEN)
    created = create_token(admin, "self", "pytest: short-lived", in_days(1))
    assert created["workflow_state"] == "active", "one's own token is active at once"
    value = created["visible_token"]
    assert canvas(sim, value).get_current_user().id == ADMIN["id"]

    response = requester(admin).request("DELETE", f"users/self/tokens/{created['id']}")
    assert response.status_code == 200
    assert response.json()["workflow_state"] == "deleted"

    with pytest.raises(InvalidAccessToken):
        canvas(sim, value).get_current_user()


@pytest.mark.parametrize(
    "token, message",
    [
        (PENDING_TOKEN, "Invalid access token."),
        (DELETED_TOKEN, "Revoked access token."),
        (EXPIRED_TOKEN, "Expired access token."),
        ("NoSuchToken0123456789abcdef", "Invalid access token."),
    ],
    ids=["pending", "deleted", "expired", "unknown"],
)
def test_unusable_tokens_raise_invalid_access_token(sim, token, message):
    """canvas-api.md §3: each is a 401 with WWW-Authenticate, which canvasapi maps to
    InvalidAccessToken; the message says why."""
    with pytest.raises(InvalidAccessToken) as raised:
        canvas(sim, token).get_current_user()
    assert message in str(raised.value)
    if token == EXPIRED_TOKEN:
        assert "2020-01-01T00:00:00Z" in str(raised.value), "expired_at"


# --- users ------------------------------------------------------------------------------------


@pytest.mark.parametrize("person", [STUDENT, OTHER_STUDENT], ids=["plain", "email-login"])
def test_get_user_by_sis_login_id(sim, person):
    user = canvas(sim, ADMIN_TOKEN).get_user(person["login_id"], "sis_login_id")
    assert (user.id, user.login_id, user.name) == (person["id"], person["login_id"], person["name"])
    # canvas-api.md §2: the look-up ignores case.
    user = canvas(sim, ADMIN_TOKEN).get_user(person["login_id"].upper(), "sis_login_id")
    assert user.id == person["id"]


def test_get_user_by_sis_login_id_that_does_not_exist(sim):
    with pytest.raises(ResourceDoesNotExist):
        canvas(sim, ADMIN_TOKEN).get_user("nobody.here", "sis_login_id")


def test_student_cannot_see_another_user(sim):
    """canvas-api.md §2: a user the caller may not see is not found (404), not 401."""
    student = canvas(sim, STUDENT_TOKEN)
    with pytest.raises(ResourceDoesNotExist):
        student.get_user(OTHER_STUDENT["id"])
    with pytest.raises(ResourceDoesNotExist):
        student.get_user(OTHER_STUDENT["login_id"], "sis_login_id")
    # ...but may see themselves.
    assert student.get_user(STUDENT["id"]).id == STUDENT["id"]


def test_student_cannot_search_users(sim):
    student = canvas(sim, STUDENT_TOKEN)
    with pytest.raises(Unauthorized):
        list(Account(requester(student), {"id": 1}).get_users(search_term=SEARCH_TERM))


# canvas-api.md §6 has canvasapi call `get_account(1)`, which is `GET /api/v1/accounts/1`.
def test_get_account(sim):
    account = canvas(sim, ADMIN_TOKEN).get_account(1)
    assert account.id == 1


def account_1(client: Canvas) -> Account:
    """Account 1, fetched the way canvas-api.md §6 says canvasapi does it."""
    return client.get_account(1)


def test_user_search_follows_pages(sim):
    admin = canvas(sim, ADMIN_TOKEN)
    responses = count_requests(admin)
    # canvasapi sends `per_page=5&per_page=100` here (PaginatedList adds its own per_page after
    # the caller's), and Canvas, like the simulator, takes the last value: pages of 100.
    account = account_1(admin)
    responses.clear()  # only the search's own pages count
    users = list(account.get_users(search_term=SEARCH_TERM, per_page=5))
    logins = [u.login_id for u in users]
    assert sorted(logins) == sorted(u["login_id"] for u in SEARCHABLE)
    assert len(set(logins)) == len(logins), "no one twice across pages"
    assert len(users) > 100
    assert len(responses) == 2, [r.url for r in responses]
    assert all(r.url.startswith(sim.url + "/api/v1/accounts/1/users?") for r in responses)


def test_user_search_with_small_pages(sim):
    """canvasapi's paginator with a page size it really sends, following rel="next"."""
    admin = canvas(sim, ADMIN_TOKEN)
    responses = count_requests(admin)
    per_page = 7
    users = PaginatedList(
        User,
        requester(admin),
        "GET",
        "accounts/1/users",
        search_term=SEARCH_TERM,
        per_page=per_page,
    )
    logins = [u.login_id for u in users]
    assert sorted(logins) == sorted(u["login_id"] for u in SEARCHABLE)
    assert len(set(logins)) == len(logins)
    pages = -(-len(SEARCHABLE) // per_page)
    assert len(responses) == pages
    assert [len(r.json()) for r in responses] == [per_page] * (pages - 1) + [
        len(SEARCHABLE) - per_page * (pages - 1)
    ]
    last = responses[-1]
    assert "next" not in last.links
    assert last.links["current"]["url"] == last.url


# --- throttling -------------------------------------------------------------------------------


def _at_once(sim: Sim, workers: int, call):
    """Runs `call(sim)` in `workers` threads released together; returns results or errors."""
    barrier = threading.Barrier(workers)
    outcomes: list = []
    lock = threading.Lock()

    def run():
        barrier.wait()
        try:
            result = call(sim)
        except Exception as e:  # noqa: BLE001 - sorted out by the caller
            result = e
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(outcomes) == workers
    return outcomes


def _current_user_id(sim: Sim):
    return canvas(sim, ADMIN_TOKEN).get_current_user().id


def test_concurrent_requests_are_throttled(slow_sim):
    """canvas-api.md §4: each request holds its up-front cost while it runs, so with a
    high-water mark of 100 and an up-front cost of 50 about two requests with one token fit in
    flight (the second gets in because the bucket has leaked a little since the first). The
    simulator answers 429, which current canvasapi maps to RateLimitExceeded (§3, §6)."""
    outcomes = _at_once(slow_sim, 6, _current_user_id)
    throttled = [o for o in outcomes if isinstance(o, RateLimitExceeded)]
    succeeded = [o for o in outcomes if o == ADMIN["id"]]
    assert throttled, f"nothing was throttled: {outcomes!r}"
    assert succeeded, f"nothing got through: {outcomes!r}"
    assert len(throttled) + len(succeeded) == len(outcomes), f"unexpected: {outcomes!r}"
    assert "X-Rate-Limit-Remaining" in str(throttled[0])


def test_a_throttled_403_is_not_rate_limit_exceeded_to_current_canvasapi(slow_sim_403):
    """canvas-api.md §3, §6: an older instance's `403 Forbidden (Rate Limit Exceeded)` is
    Forbidden to canvasapi 3.5 and later, not RateLimitExceeded — a client that must work with
    such an instance has to look at the body itself (tokendesk's client does)."""
    outcomes = _at_once(slow_sim_403, 6, _current_user_id)
    forbidden = [o for o in outcomes if isinstance(o, Forbidden)]
    succeeded = [o for o in outcomes if o == ADMIN["id"]]
    assert forbidden, f"nothing was throttled: {outcomes!r}"
    assert succeeded, f"nothing got through: {outcomes!r}"
    assert not any(isinstance(o, RateLimitExceeded) for o in outcomes), outcomes
    assert len(forbidden) + len(succeeded) == len(outcomes), f"unexpected: {outcomes!r}"
    assert "Rate Limit Exceeded" in str(forbidden[0])


@pytest.mark.parametrize("status", [429, 403])
def test_throttled_response_shape(slow_sim, slow_sim_403, status):
    """The raw answer (canvas-api.md §3): 429 by default, 403 when asked; text/plain
    `<status> Forbidden (Rate Limit Exceeded)`, no Retry-After, X-Rate-Limit-Remaining."""
    sim = slow_sim if status == 429 else slow_sim_403
    url = f"{sim.url}/api/v1/users/self"
    headers = {"Authorization": f"Bearer {STUDENT_TOKEN}"}

    def call(sim):
        with requests.Session() as session:
            return session.get(url, headers=headers, timeout=10)

    responses = _at_once(sim, 4, call)
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and status in statuses and set(statuses) == {200, status}, statuses
    throttled = next(r for r in responses if r.status_code == status)
    assert throttled.headers["Content-Type"].startswith("text/plain")
    assert throttled.text.strip() == f"{status} Forbidden (Rate Limit Exceeded)"
    assert "X-Rate-Limit-Remaining" in throttled.headers
    assert "X-Request-Cost" not in throttled.headers
    assert "Retry-After" not in throttled.headers
    assert "WWW-Authenticate" not in throttled.headers
    ok = next(r for r in responses if r.status_code == 200)
    # canvas-api.md §4: Ruby prints the float.
    assert ok.headers["X-Request-Cost"] == "0.05"
