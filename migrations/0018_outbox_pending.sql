-- Cheaper publication marking (issue 19).
--
-- Until now the relay marked every row it published (`UPDATE ... SET
-- published_at = now()`): a new copy of each ~700-byte row plus entries in
-- three indexes, about 60 ms per 2,000 rows. Instead, what is still to be
-- published is kept apart, in a narrow queue with one entry per writing
-- statement and user: the range of versions that statement appended. The
-- relay deletes the entries it published, in the transaction that held them
-- while the publish succeeded; a DELETE writes no new row version and no index
-- entry. The outbox rows themselves are never updated again: written once,
-- read by the relay and by catch-up, deleted by pruning.
--
-- A user's entries are always a suffix of the user's history: they are
-- appended in version order (under the user's row lock) and the relay removes
-- a prefix of them (under the user's advisory lock). So a row is published
-- exactly when no entry of its user starts at or below its version.
CREATE TABLE plansync.outbox_pending (
    user_id BIGINT NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    first_version BIGINT NOT NULL,
    last_version BIGINT NOT NULL,
    -- The outbox rows in [first_version, last_version] (the backlog's count).
    rows INT NOT NULL,
    -- Of the oldest of those rows (the backlog's age).
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, first_version)
) WITH (
    -- A queue: rows live for milliseconds. Vacuum it by the number of dead
    -- rows, not by a fraction of a table that is nearly always empty, so the
    -- relay's index probes and `status`'s pass stay short.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000
);

-- Every INSERT into the outbox records its ranges, whoever makes it: this
-- binary's `store::outbox::append`, or a replica of the previous version still
-- running during a rolling upgrade. One entry per user per statement, from the
-- statement's transition table (no per-row trigger).
CREATE FUNCTION plansync.outbox_record_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plansync.outbox_pending (user_id, first_version, last_version, rows, created_at)
    SELECT user_id, min(version), max(version), count(*), min(created_at)
      FROM appended GROUP BY user_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_record_pending
    AFTER INSERT ON plansync.outbox
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION plansync.outbox_record_pending();

-- What was unpublished when this migration ran stays to be published.
INSERT INTO plansync.outbox_pending (user_id, first_version, last_version, rows, created_at)
SELECT user_id, version, version, 1, created_at
  FROM plansync.outbox WHERE published_at IS NULL;

-- The relay's old work list and the old pruning index go with the column they
-- served. Pruning now walks the primary key from the oldest id (ids grow with
-- time) and stops at the first row inside the retention period.
DROP INDEX plansync.outbox_unpublished_idx;
DROP INDEX plansync.outbox_published_at_idx;
ALTER TABLE plansync.outbox DROP COLUMN published_at;
