-- Loa controller schema, migration 3: emergencies.
-- How many times the audio plays back to back within one play, `repeat_gap_s` apart (emergencies: 3).
ALTER TABLE schedules ADD COLUMN play_times INTEGER NOT NULL DEFAULT 1 CHECK (play_times BETWEEN 1 AND 5);
-- A pre-recorded warning kept ready to send as an emergency at once (GET /emergencies/library).
ALTER TABLE bulletins ADD COLUMN library INTEGER NOT NULL DEFAULT 0;
CREATE INDEX plays_status_time ON plays(status, planned_at);
