-- The queue at a million connections (issue 14): claims that stay flat behind
-- work that cannot run, a scheduler and pruning that read indexes instead of
-- scanning, and the push-target rule written once (issue 12).

-- The push target ---------------------------------------------------------

-- The connection new appointments of a user go to: the marked active one,
-- else the user's first active one; NULL without an active connection. The
-- one place this rule is written: the host triggers, the enqueues of the
-- worker, `status` and the sync jobs all call it.
CREATE FUNCTION plansync.push_target(p_user BIGINT) RETURNS BIGINT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT c.id FROM plansync.connections c
     WHERE c.user_id = p_user AND c.active
     ORDER BY c.push_target DESC, c.id LIMIT 1
$$;

CREATE OR REPLACE FUNCTION plansync.record_local_changes(p_ids BIGINT[], p_users BIGINT[])
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region)
    SELECT DISTINCT 'push', COALESCE(lc.id, pt.id), ch.id, COALESCE(lc.region, pt.region)
      FROM UNNEST(p_ids, p_users) AS ch(id, user_id)
      LEFT JOIN plansync.links l ON l.appointment_id = ch.id
      LEFT JOIN plansync.connections lc ON lc.id = l.connection_id AND lc.active
      LEFT JOIN plansync.connections pt
             ON l.connection_id IS NULL AND pt.id = plansync.push_target(ch.user_id)
     WHERE COALESCE(lc.id, pt.id) IS NOT NULL
    ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) WHERE state = 'queued'
    -- Not DO NOTHING: touching the queued job row-locks it until the host's
    -- transaction ends, so no worker can claim it (claims skip locked rows)
    -- and push the values from before this change.
    DO UPDATE SET updated_at = now()
$$;

-- Jobs that cannot run -----------------------------------------------------

-- Whether a job of `p_kind` must wait for its connection: everything of a
-- connection that is disconnected, needs re-auth or whose calendar is gone
-- waits, except the watch job of a disconnected connection (it stops the
-- notification channels with the grant kept for that, webhooks issue).
CREATE FUNCTION plansync.job_blocked(p_kind TEXT, p_active BOOLEAN, p_needs_reauth BOOLEAN,
                                     p_calendar_gone BOOLEAN)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT NOT ((p_active AND NOT p_needs_reauth AND NOT p_calendar_gone)
                OR (p_kind = 'watch' AND NOT p_active))
$$;

-- Set on queued (and running) jobs whose connection cannot run them now.
-- Claims read an index that leaves these rows out, so a backlog of them costs
-- a claim nothing; they come back when the connection is repaired.
ALTER TABLE plansync.jobs ADD COLUMN blocked BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE plansync.jobs j SET blocked = TRUE
  FROM plansync.connections c
 WHERE c.id = j.connection_id AND j.state IN ('queued', 'running')
   AND plansync.job_blocked(j.kind, c.active, c.needs_reauth, c.calendar_gone);

-- A new job takes its connection's state. No lock: a connection changing state
-- at the same moment is settled by the recheck below.
CREATE FUNCTION plansync.jobs_take_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT plansync.job_blocked(NEW.kind, c.active, c.needs_reauth, c.calendar_gone)
      INTO NEW.blocked
      FROM plansync.connections c WHERE c.id = NEW.connection_id;
    NEW.blocked := COALESCE(NEW.blocked, FALSE);
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_take_blocked BEFORE INSERT ON plansync.jobs
    FOR EACH ROW EXECUTE FUNCTION plansync.jobs_take_blocked();

-- Connections whose state changed, until every transaction that may have
-- read the old state while inserting a job has ended (`horizon`: the next
-- transaction id when the scheduler first saw the row; NULL until then).
-- `plansync.recheck_blocked_jobs` then sets those jobs' flag again.
CREATE TABLE plansync.blocked_recheck (
    connection_id BIGINT PRIMARY KEY REFERENCES plansync.connections(id) ON DELETE CASCADE,
    horizon xid8
);

-- A connection's state change moves its jobs into or out of the claimable
-- set at once, in the changing transaction, and notes it for the recheck.
-- Jobs locked by another transaction (a host's open edit touching its queued
-- push, a running job's fenced transaction) are passed over, never waited
-- for: waiting here, under the connection's row lock, could deadlock with
-- that transaction's next job insert (its foreign-key check waits for the
-- connection row). The recheck moves them later.
CREATE FUNCTION plansync.connections_move_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plansync.blocked_recheck (connection_id) VALUES (NEW.id)
    ON CONFLICT (connection_id) DO UPDATE SET horizon = NULL;
    UPDATE plansync.jobs
       SET blocked = plansync.job_blocked(kind, NEW.active, NEW.needs_reauth, NEW.calendar_gone)
     WHERE id IN (
        SELECT id FROM plansync.jobs
         WHERE connection_id = NEW.id AND state IN ('queued', 'running')
           AND blocked <> plansync.job_blocked(kind, NEW.active, NEW.needs_reauth,
                                               NEW.calendar_gone)
           FOR UPDATE SKIP LOCKED);
    RETURN NULL;
END $$;
CREATE TRIGGER connections_move_jobs
    AFTER UPDATE OF active, needs_reauth, calendar_gone ON plansync.connections
    FOR EACH ROW
    WHEN ((OLD.active, OLD.needs_reauth, OLD.calendar_gone)
          IS DISTINCT FROM (NEW.active, NEW.needs_reauth, NEW.calendar_gone))
    EXECUTE FUNCTION plansync.connections_move_jobs();

-- The scheduler's part of the above: gives each noted connection a horizon,
-- and for those whose horizon every open transaction is past, sets their jobs'
-- flag from the connection's state as it is now. Waits for no lock (rows
-- locked elsewhere are left for a later call), so it never deadlocks with
-- the transactions it corrects. Returns the jobs corrected.
CREATE FUNCTION plansync.recheck_blocked_jobs() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_connection BIGINT;
    v_rows BIGINT;
    v_fixed BIGINT := 0;
BEGIN
    -- One connection at a time, by index: never a join over the whole jobs
    -- or connections table, whatever the planner would guess.
    FOR v_connection IN
        SELECT r.connection_id FROM plansync.blocked_recheck r
         WHERE r.horizon <= pg_snapshot_xmin(pg_current_snapshot())
           FOR UPDATE SKIP LOCKED
    LOOP
        WITH wrong AS (
            SELECT j.id,
                   plansync.job_blocked(j.kind, c.active, c.needs_reauth, c.calendar_gone) AS should
              FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id
             WHERE j.connection_id = v_connection AND j.state IN ('queued', 'running')
               AND j.blocked <> plansync.job_blocked(j.kind, c.active, c.needs_reauth,
                                                     c.calendar_gone)
               FOR UPDATE OF j SKIP LOCKED)
        UPDATE plansync.jobs j SET blocked = wrong.should FROM wrong WHERE j.id = wrong.id;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_fixed := v_fixed + v_rows;
        IF EXISTS (
            SELECT 1 FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id
             WHERE j.connection_id = v_connection AND j.state IN ('queued', 'running')
               AND j.blocked <> plansync.job_blocked(j.kind, c.active, c.needs_reauth,
                                                     c.calendar_gone))
        THEN
            -- Some were locked: look again once their holders are gone.
            UPDATE plansync.blocked_recheck SET horizon = NULL
             WHERE connection_id = v_connection;
        ELSE
            DELETE FROM plansync.blocked_recheck WHERE connection_id = v_connection;
        END IF;
    END LOOP;
    UPDATE plansync.blocked_recheck SET horizon = pg_snapshot_xmax(pg_current_snapshot())
     WHERE connection_id IN (SELECT connection_id FROM plansync.blocked_recheck
                              WHERE horizon IS NULL FOR UPDATE SKIP LOCKED);
    RETURN v_fixed;
END $$;

-- The claim's index: queued, claimable jobs in claim order. Replaces the two
-- claim indexes of 0003 and 0015, which also held the blocked rows.
DROP INDEX plansync.jobs_claim_idx;
DROP INDEX plansync.jobs_claim_priority_idx;
CREATE INDEX jobs_claimable_idx ON plansync.jobs (region, priority, run_at, id)
    WHERE state = 'queued' AND NOT blocked;
-- The oldest claimable job, whatever its priority: the idle loop's next wake-up
-- and `status`'s oldestDueLagSecs, each one index probe.
CREATE INDEX jobs_claimable_run_at_idx ON plansync.jobs (run_at)
    WHERE state = 'queued' AND NOT blocked;

-- Polling -----------------------------------------------------------------

-- When the scheduler looks at the connection next: the end of its current
-- polling slot, or the end of its back-off, or its live channel's expiry,
-- whichever applies. '-infinity': at the next tick (new connections, and any
-- change of what the rule reads: a pull, a back-off, a channel). A tick reads
-- the connections whose time has come through the index below, not all of
-- them; the rule itself is still decided in full for each one it reads.
ALTER TABLE plansync.connections ADD COLUMN poll_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
CREATE INDEX connections_poll_idx ON plansync.connections (region, poll_at)
    WHERE active AND NOT needs_reauth AND NOT calendar_gone;

CREATE FUNCTION plansync.connections_repoll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.last_pull_at, NEW.backoff_until) IS DISTINCT FROM (OLD.last_pull_at, OLD.backoff_until)
    THEN
        NEW.poll_at := '-infinity';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER connections_repoll
    BEFORE UPDATE OF last_pull_at, backoff_until ON plansync.connections
    FOR EACH ROW EXECUTE FUNCTION plansync.connections_repoll();

CREATE FUNCTION plansync.channels_repoll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE plansync.connections SET poll_at = '-infinity'
     WHERE id = NEW.connection_id AND poll_at > '-infinity';
    RETURN NULL;
END $$;
CREATE TRIGGER channels_repoll
    AFTER INSERT OR UPDATE OF state, retired_at, expires_at ON plansync.channels
    FOR EACH ROW EXECUTE FUNCTION plansync.channels_repoll();

-- Vacuum ---------------------------------------------------------------------

-- Both tables are rewritten row by row all day (every job passes through
-- three versions; every connection gets a new `poll_at` once per polling
-- slot), and the claim and the scheduler read their partial indexes from the
-- low end, where the dead entries of those versions gather: vacuum them
-- after a small share of changes, not the default fifth of the table.
ALTER TABLE plansync.jobs SET (autovacuum_vacuum_scale_factor = 0.02,
                               autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE plansync.connections SET (autovacuum_vacuum_scale_factor = 0.02);
