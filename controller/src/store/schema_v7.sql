-- Loa controller schema, migration 7: plays by planned time across all receivers.

-- The week view counts a province's plays per schedule and time over seven days (`Store::play_slots`), and
-- `GET /plays?from=&until=` lists a window; without this index both read the whole table (millions of rows after
-- a year of 10,000 receivers).
CREATE INDEX plays_time ON plays(planned_at);
