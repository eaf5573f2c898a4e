-- tokendesk schema, SQLite flavour. Times are Unix seconds (UTC); dates are 'YYYY-MM-DD' text.
CREATE TABLE people (
    login           TEXT PRIMARY KEY,
    name            TEXT,
    email           TEXT,
    canvas_user_id  INTEGER,
    first_seen_at   INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE requests (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    requester             TEXT NOT NULL REFERENCES people(login),
    purpose               TEXT NOT NULL,
    application           TEXT,
    requested_expires_on  TEXT NOT NULL,
    expires_on            TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('submitted','approved','issued','activated','expired','revoked','denied','cancelled','failed')),
    decided_by            TEXT,
    reason                TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX requests_by_state ON requests (state, created_at, id);
CREATE INDEX requests_by_requester ON requests (requester, created_at, id);

CREATE TABLE tokens (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id       INTEGER NOT NULL UNIQUE REFERENCES requests(id),
    owner            TEXT NOT NULL REFERENCES people(login),
    canvas_user_id   INTEGER NOT NULL,
    canvas_token_id  INTEGER NOT NULL,
    hint             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending','active','deleted')),
    expires_at       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX tokens_by_owner ON tokens (owner, id);

CREATE TABLE envelopes (
    id          TEXT PRIMARY KEY,
    request_id  INTEGER NOT NULL REFERENCES requests(id),
    owner       TEXT NOT NULL REFERENCES people(login),
    state       TEXT NOT NULL CHECK (state IN ('sealed','revealed','burned','expired')),
    reveals     INTEGER NOT NULL DEFAULT 0,
    nonce       BLOB,
    ciphertext  BLOB,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX envelopes_by_request ON envelopes (request_id);

CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    client_addr  TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_by_target ON audit_events (target, seq);
CREATE INDEX audit_by_actor ON audit_events (actor, seq);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    request_id    INTEGER REFERENCES requests(id),
    state         TEXT NOT NULL CHECK (state IN ('queued','running','done','dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_after     INTEGER NOT NULL,
    locked_until  INTEGER,
    locked_by     TEXT,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX jobs_ready ON jobs (state, run_after, id);

CREATE TABLE emails (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    request_id    INTEGER REFERENCES requests(id),
    to_login      TEXT,
    to_addr       TEXT,
    subject       TEXT,
    body_text     TEXT,
    body_html     TEXT,
    sealed_body   BLOB,
    state         TEXT NOT NULL CHECK (state IN ('queued','sending','sent','dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_after     INTEGER NOT NULL,
    locked_until  INTEGER,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER
);
CREATE INDEX emails_ready ON emails (state, run_after, id);
CREATE INDEX emails_by_login ON emails (to_login, id);
