-- Loa controller schema, migration 5: fleet health (alerts, health history).

-- Alerts opened and resolved by the evaluator (controller/src/alerts/). `kind` is one of the rules; a condition
-- alert (offline, faults, disk, clock, temperature) resolves by itself when its cause goes away; a missed-play
-- alert (play_id set) resolves when the play turns out played after all, or when someone acknowledges it.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('offline', 'missed_play', 'speaker_fault', 'amp_fault',
                                                 'disk_full', 'clock_offset', 'temperature')),
    receiver_id     TEXT REFERENCES receivers(id),
    area_id         INTEGER REFERENCES areas(id),  -- the receiver's area when opened (for scoping)
    play_id         TEXT,                          -- missed_play only
    detail          TEXT NOT NULL,                 -- for people: what is wrong, with numbers
    opened_at       INTEGER NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT,
    resolved_at     INTEGER
);
-- At most one open alert per (kind, receiver, play).
CREATE UNIQUE INDEX alerts_one_open ON alerts(kind, COALESCE(receiver_id, ''), COALESCE(play_id, ''))
    WHERE resolved_at IS NULL;
CREATE INDEX alerts_play ON alerts(play_id) WHERE play_id IS NOT NULL;
CREATE INDEX alerts_opened ON alerts(opened_at);

-- Heartbeats kept for the receiver page's chart: at most one per receiver per 5 minutes, pruned after 14 days.
CREATE TABLE health_samples (
    receiver_id TEXT NOT NULL REFERENCES receivers(id),
    at          INTEGER NOT NULL,
    health      TEXT NOT NULL,                     -- the Health message, JSON as received
    PRIMARY KEY (receiver_id, at)
) WITHOUT ROWID;
