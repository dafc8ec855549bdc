-- Hostile input: events set aside, pushes parked, connection-level failure
-- state and back-off, and the token key's check value.

-- Events of a listing that could not be read or stored. One row per
-- (connection, event); `event_key` is the recorded id ('' for an event without
-- one). Retried whenever Google lists the event again; deleted once it
-- imports or is cancelled.
CREATE TABLE plansync.skipped_events (
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    event_key TEXT NOT NULL,
    event_id TEXT,
    reason TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, event_key)
);

-- Appointments whose push was refused before anything was sent (times out of
-- range, end before start, all-day not on midnights, unknown zone). Cleared by
-- the next push of the appointment that is sent (or finds nothing to send).
CREATE TABLE plansync.parked_pushes (
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    appointment_id BIGINT NOT NULL,
    reason TEXT NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, appointment_id)
);

-- A connection's failures: since when its jobs have been failing, how many in
-- a row, and until when the scheduler leaves it alone (its own exponential
-- back-off), so a broken connection never spawns a new pull per tick.
ALTER TABLE plansync.connections
    ADD COLUMN failing_since TIMESTAMPTZ,
    ADD COLUMN failures INT NOT NULL DEFAULT 0,
    ADD COLUMN backoff_until TIMESTAMPTZ;

-- Dead jobs are pruned after PLANSYNC_DEAD_JOB_RETENTION_SECS; status lists
-- the newest.
CREATE INDEX jobs_dead_finished_idx ON plansync.jobs (finished_at) WHERE state = 'dead';

-- Values the worker keeps for itself, e.g. the token key's check value.
CREATE TABLE plansync.settings (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A host's time as the worker can read it: NULL for `infinity` and for years
-- outside 1..9999 (which every layer up to a JavaScript client can hold), so
-- such a row is read, refused for push and shown, instead of failing to decode.
CREATE FUNCTION plansync.storable_time(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t >= '0001-01-01 00:00:00+00' AND t < '10000-01-01 00:00:00+00' THEN t END
$$;
