-- Loa controller schema, migration 2: what a schedule needs to keep expanding itself into plays the same way.
ALTER TABLE schedules ADD COLUMN tz TEXT NOT NULL DEFAULT 'Asia/Ho_Chi_Minh';
-- What to do when a later occurrence overlaps a play of equal or higher tier: 'refuse' (the play is recorded
-- as cancelled with the reason) or 'queue' (it moves to just after the other play).
ALTER TABLE schedules ADD COLUMN on_clash TEXT NOT NULL DEFAULT 'refuse' CHECK (on_clash IN ('refuse', 'queue'));
-- Length assumed for one play when spacing repeats and checking overlaps, fixed when the schedule was made.
ALTER TABLE schedules ADD COLUMN slot_ms INTEGER NOT NULL DEFAULT 300000;
-- Occurrences before this instant (UTC ms) have been expanded into plays; NULL = none yet.
ALTER TABLE schedules ADD COLUMN expanded_until INTEGER;
CREATE INDEX plays_bulletin ON plays(bulletin_id);
