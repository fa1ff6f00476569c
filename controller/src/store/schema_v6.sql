-- Loa controller schema, migration 6: receivers' Mosquitto password hashes.

-- `$7$101$<salt>$<PBKDF2-SHA512>` of the receiver's secret, as a mosquitto password file holds it, made at
-- registration (the secret itself is never stored) so that `loa-controller mosquitto-acl` can write the file.
-- NULL for receivers registered before this migration.
ALTER TABLE receivers ADD COLUMN mosquitto_hash TEXT;
