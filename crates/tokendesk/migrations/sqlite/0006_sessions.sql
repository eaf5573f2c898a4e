-- Signing in to tokendesk itself (issue 11): sessions for OIDC and the demo, the OIDC sign-ins
-- under way, and service keys for automation. Secrets are stored only as SHA-256 hashes.

-- A browser's session. The cookie holds a random 256-bit id; only its hash is here, so the
-- table alone signs nobody in. `public_id` names the session on pages (it is not the secret).
-- `roles` are those the identity provider's groups gave at sign-in (comma-separated names);
-- `id_token` is kept for the provider's sign-out (`id_token_hint`).
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    public_id     TEXT NOT NULL UNIQUE,
    login         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '',
    id_token      TEXT,
    client_addr   TEXT,
    user_agent    TEXT,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    ended_by      TEXT
);
CREATE INDEX sessions_of ON sessions (login, created_at);
CREATE INDEX sessions_expiring ON sessions (expires_at);

-- An OIDC sign-in between the redirect to the provider and its answer: looked up by the hash
-- of `state`, used once.
CREATE TABLE oidc_flows (
    state_hash     TEXT PRIMARY KEY,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    next_path      TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX oidc_flows_age ON oidc_flows (created_at);

-- A key for automation: acts with exactly `role` as `key:NAME`.
CREATE TABLE service_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
