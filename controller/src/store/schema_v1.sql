-- Loa controller schema, migration 1. Times are UTC unix milliseconds (INTEGER) unless said otherwise.
-- Later migrations add tables/columns; they never rewrite this file.

-- Admin tree of any depth: province → (district) → commune → village.
CREATE TABLE areas (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('province', 'district', 'commune', 'village', 'other')),
    parent_id   INTEGER REFERENCES areas(id),
    -- Languages this area's receivers play, in order, comma-separated codes ('vi,hmn'); NULL = inherit parent's.
    languages   TEXT,
    -- Quiet hours in local time 'HH:MM'; NULL = inherit parent's (the root default is 21:30–05:30).
    quiet_start TEXT,
    quiet_end   TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX areas_parent ON areas(parent_id);

-- Named groups of areas and/or receivers (e.g. "riverside villages").
CREATE TABLE groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE group_members (
    group_id    INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    area_id     INTEGER REFERENCES areas(id),
    receiver_id TEXT REFERENCES receivers(id),
    CHECK ((area_id IS NULL) <> (receiver_id IS NULL))
);

-- Receivers: id is the MQTT client id and appears in topics ('rx-' + 12 hex).
CREATE TABLE receivers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    area_id     INTEGER NOT NULL REFERENCES areas(id),
    secret_hash TEXT NOT NULL,          -- hex SHA-256 of the MQTT password (shown once at registration)
    created_at  INTEGER NOT NULL,
    online      INTEGER NOT NULL DEFAULT 0,
    last_seen   INTEGER,
    health      TEXT,                   -- last Health message, JSON as received
    health_at   INTEGER
);
CREATE INDEX receivers_area ON receivers(area_id);

-- Bulletins and their language variants (one encoded Ogg Opus file each).
CREATE TABLE bulletins (
    id           TEXT PRIMARY KEY,      -- 'b-' + 12 hex
    title        TEXT NOT NULL,
    category     TEXT NOT NULL,         -- policy | market | security | disaster | health | other
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER
);
CREATE TABLE variants (
    id          INTEGER PRIMARY KEY,
    bulletin_id TEXT NOT NULL REFERENCES bulletins(id),
    language    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('encoding', 'ready', 'failed')),
    error       TEXT,                   -- for 'failed': a message an official can read
    sha256      TEXT,                   -- of the Ogg Opus file (hex), once ready; the file is DATA/bulletins/<sha256>.opus
    bytes       INTEGER,
    duration_ms INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (bulletin_id, language)
);

-- Schedules: a rule, a tier, targets. Expanded into plays (below) for the planning horizon.
CREATE TABLE schedules (
    id           INTEGER PRIMARY KEY,
    bulletin_id  TEXT NOT NULL REFERENCES bulletins(id),
    rule         TEXT NOT NULL,         -- JSON: {"at": "..."} | {"daily": [...]} | {"weekly": {...}} | {"cron": "..."}
    tier         TEXT NOT NULL CHECK (tier IN ('normal', 'priority', 'emergency')),
    repeat_count INTEGER NOT NULL DEFAULT 1,
    repeat_gap_s INTEGER NOT NULL DEFAULT 0,
    valid_from   INTEGER,
    valid_until  INTEGER,
    volume       REAL,                  -- 0..1; NULL = receiver default
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER
);
CREATE TABLE schedule_targets (
    schedule_id INTEGER NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('area', 'group', 'receiver')),
    target      TEXT NOT NULL           -- area id / group id as text, or receiver id
);
CREATE INDEX schedule_targets_schedule ON schedule_targets(schedule_id);

-- One planned play of one schedule occurrence on one receiver, and what became of it.
CREATE TABLE plays (
    id          TEXT PRIMARY KEY,       -- 'p-' + 16 hex; the play id in plans and reports
    schedule_id INTEGER NOT NULL REFERENCES schedules(id),
    receiver_id TEXT NOT NULL REFERENCES receivers(id),
    bulletin_id TEXT NOT NULL REFERENCES bulletins(id),
    planned_at  INTEGER NOT NULL,
    tier        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'planned'
                CHECK (status IN ('planned', 'downloading', 'ready', 'playing', 'played', 'missed', 'preempted', 'cancelled')),
    progress    INTEGER NOT NULL DEFAULT 0,   -- download percent
    started_at  INTEGER,
    finished_at INTEGER,
    reason      TEXT,                   -- for missed/preempted/cancelled
    UNIQUE (schedule_id, receiver_id, planned_at)
);
CREATE INDEX plays_receiver_time ON plays(receiver_id, planned_at);
CREATE INDEX plays_schedule ON plays(schedule_id);

-- Play reports received, for deduplication (a device resends until acknowledged).
CREATE TABLE reports (
    receiver_id TEXT NOT NULL,
    report_id   INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (receiver_id, report_id)
);

-- Last plan sequence published per receiver (monotonic, survives restarts).
CREATE TABLE plan_versions (
    receiver_id  TEXT PRIMARY KEY REFERENCES receivers(id),
    seq          INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    digest       TEXT NOT NULL          -- hash of the plan content, to avoid republishing an unchanged plan
);

-- Small settings: admin token hash, signing key id, demo seeded flag, ...
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
