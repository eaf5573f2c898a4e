-- When something goes wrong (issue 13): leaked-token reports matched by a keyed fingerprint,
-- and bulk revocation runs that survive a crash.

-- HMAC-SHA256 of the token's value under security.fingerprint_key (hex), set at issuance when
-- that key is configured. Not the value: without the key it says nothing about it.
ALTER TABLE tokens ADD COLUMN fingerprint TEXT;
CREATE INDEX tokens_by_hint ON tokens (hint, state);

-- A report of a leaked token: who reported it, where they found it, what it matched (the
-- pasted value is never stored).
CREATE TABLE reports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter       TEXT NOT NULL,
    where_found    TEXT NOT NULL,
    by_hint        INTEGER NOT NULL,
    matched        INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

-- A bulk revocation: what it was asked to revoke, by whom and why, and how far it got.
CREATE TABLE revoke_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    filter       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    total        INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

-- One token of a run: queued, then done or failed (with why). A token is in at most one
-- unfinished run.
CREATE TABLE revoke_items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES revoke_runs(id),
    request_id  INTEGER NOT NULL REFERENCES requests(id),
    owner       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued','done','failed')),
    error       TEXT,
    updated_at  INTEGER NOT NULL,
    UNIQUE (run_id, request_id)
);
CREATE INDEX revoke_items_of_request ON revoke_items (request_id, state);
CREATE INDEX revoke_items_of_run ON revoke_items (run_id, state, owner);
