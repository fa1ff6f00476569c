-- Loa controller schema, migration 4: people (users, sessions, API tokens, approval, audit).

-- People who use the console and the API. Each is scoped to a subtree of the admin tree (area_id = its root;
-- NULL = the whole tree) and can neither see nor target anything outside it.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,        -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'approver', 'operator', 'viewer')),
    area_id       INTEGER REFERENCES areas(id),
    emergency     INTEGER NOT NULL DEFAULT 0 CHECK (emergency IN (0, 1)),
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
);

-- Console sessions (cookie loa_session). The token itself is never stored, only its hex SHA-256.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,         -- sent back in X-CSRF-Token on state-changing requests
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ip           TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

-- API tokens of users (Authorization: Bearer), stored hashed.
CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

-- Approval before air. New rows default to 'draft' (fail closed); bulletins that existed before are approved.
ALTER TABLE bulletins ADD COLUMN status TEXT NOT NULL DEFAULT 'draft'
    CHECK (status IN ('draft', 'submitted', 'approved', 'rejected'));
UPDATE bulletins SET status = 'approved';
-- The area that owns the bulletin (NULL = the whole tree), who made it, who reviewed it.
ALTER TABLE bulletins ADD COLUMN area_id INTEGER REFERENCES areas(id);
ALTER TABLE bulletins ADD COLUMN created_by INTEGER REFERENCES users(id);
ALTER TABLE bulletins ADD COLUMN reviewed_by INTEGER REFERENCES users(id);
ALTER TABLE bulletins ADD COLUMN review_comment TEXT;
ALTER TABLE bulletins ADD COLUMN reviewed_at INTEGER;
CREATE INDEX bulletins_area ON bulletins(area_id);

-- One-step approval: in this area and below, submitting a bulletin approves it.
ALTER TABLE areas ADD COLUMN one_step_approval INTEGER NOT NULL DEFAULT 0 CHECK (one_step_approval IN (0, 1));

-- Who did what, when, from where. Never updated or deleted by the controller.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    user_id     INTEGER,                -- NULL: the admin token, or nobody (failed login)
    username    TEXT NOT NULL,          -- copied, so the entry survives renames
    action      TEXT NOT NULL,
    object_kind TEXT,
    object_id   TEXT,
    area_id     INTEGER,                -- the area the object belongs to (NULL = whole tree), for scoped reading
    detail      TEXT NOT NULL DEFAULT '{}',  -- JSON
    ip          TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
