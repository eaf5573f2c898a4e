-- The token's life after delivery (issue 12): renewals, activation checks on a schedule, what
-- Canvas last said of each token, notices sent once (reminders, warnings), calendar feeds and
-- tokens found in Canvas that tokendesk does not know.

-- A renewal names the request whose token it renews.
ALTER TABLE requests ADD COLUMN renews INTEGER REFERENCES requests(id);

-- When Canvas first reported the token active; when it was last used there (Canvas's
-- last_used_at); the expiry Canvas holds; when to ask Canvas about a pending token next, and
-- how often it was asked; when reconciliation last compared it with Canvas.
ALTER TABLE tokens ADD COLUMN activated_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE tokens ADD COLUMN canvas_expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN next_check_at INTEGER;
ALTER TABLE tokens ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN reconciled_at INTEGER;
CREATE INDEX tokens_to_check ON tokens (state, next_check_at, id);

-- A notice about a request sent at most once (an expiry reminder "expiry:14", an unused-token
-- warning "unused:…"): the unique key makes the second instance that tries a no-op.
CREATE TABLE notices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  INTEGER NOT NULL REFERENCES requests(id),
    kind        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (request_id, kind)
);

-- A person's calendar feed: the secret in its address (`/calendar/SECRET.ics`). It shows
-- expiry dates and purposes only; a new one replaces it, and the old address stops working.
CREATE TABLE calendar_feeds (
    login        TEXT PRIMARY KEY REFERENCES people(login),
    secret       TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
);

-- Tokens in Canvas whose purpose says tokendesk made them but that tokendesk does not know.
CREATE TABLE orphans (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_user_id     INTEGER NOT NULL,
    canvas_token_id    INTEGER NOT NULL,
    owner              TEXT,
    purpose            TEXT NOT NULL,
    hint               TEXT NOT NULL,
    canvas_expires_at  INTEGER,
    found_at           INTEGER NOT NULL,
    seen_at            INTEGER NOT NULL,
    UNIQUE (canvas_user_id, canvas_token_id)
);
