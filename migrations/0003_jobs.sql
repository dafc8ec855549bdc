-- The job queue (see src/queue/mod.rs for the guarantees) and the triggers on
-- the host's appointments that feed it.

CREATE TABLE plansync.jobs (
    id BIGSERIAL PRIMARY KEY,
    -- Widened by later migrations (drop and re-add the named constraint). A
    -- worker only claims the kinds its build knows, so a fleet can roll out a
    -- new kind without old workers killing its jobs.
    kind TEXT NOT NULL CONSTRAINT jobs_kind_check
        CHECK (kind IN ('pull', 'full_resync', 'push', 'watch')),
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    -- push: the appointment whose local change is to be sent; no foreign key,
    -- the push of a DELETE outlives its row.
    appointment_id BIGINT,
    -- The connection's region at enqueue (moved along by `connect --region`),
    -- so a claim filters on an index of this table alone.
    region TEXT NOT NULL,
    -- queued -> running -> succeeded | dead | queued (retry, snooze, release,
    -- rescue) | superseded (folded into an equal queued job, superseded_by).
    -- succeeded and superseded rows are pruned after an hour; dead rows stay
    -- until `jobs retry --dead` or the connection goes.
    state TEXT NOT NULL DEFAULT 'queued' CONSTRAINT jobs_state_check
        CHECK (state IN ('queued', 'running', 'succeeded', 'dead', 'superseded')),
    run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Failed runs so far (rescues of an expired lease count, snoozes and
    -- releases at shutdown do not).
    attempts INT NOT NULL DEFAULT 0,
    -- The lease: fresh per claim, checked by every transition of a running job.
    claim_token UUID,
    locked_by TEXT,
    locked_until TIMESTAMPTZ,
    last_error TEXT,
    superseded_by BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    CONSTRAINT jobs_push_has_appointment CHECK ((kind = 'push') = (appointment_id IS NOT NULL)),
    CONSTRAINT jobs_running_has_lease CHECK (
        (state = 'running') = (claim_token IS NOT NULL AND locked_until IS NOT NULL))
);

-- Dedup: at most one queued job per (kind, connection, appointment). Enqueues
-- target this index with ON CONFLICT.
CREATE UNIQUE INDEX jobs_one_queued
    ON plansync.jobs (kind, connection_id, (COALESCE(appointment_id, 0)))
    WHERE state = 'queued';
-- Exclusivity: a connection's pulls and pushes never interleave.
CREATE UNIQUE INDEX jobs_one_running_per_connection
    ON plansync.jobs (connection_id) WHERE state = 'running';
CREATE INDEX jobs_claim_idx ON plansync.jobs (region, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_lease_idx ON plansync.jobs (region, locked_until) WHERE state = 'running';
CREATE INDEX jobs_dead_idx ON plansync.jobs (connection_id) WHERE state = 'dead';
CREATE INDEX jobs_finished_idx ON plansync.jobs (finished_at)
    WHERE state IN ('succeeded', 'superseded');
CREATE INDEX jobs_connection_idx ON plansync.jobs (connection_id, kind);

-- Puts job p_id (whose lock the caller holds) back in the queue. When an equal
-- job is already queued (a trigger fired while this one ran), this one is
-- folded into it instead: the survivor keeps the later run_at and the larger
-- attempt count, and this row points at it. Returns the id that is queued.
CREATE FUNCTION plansync.job_requeue(p_id BIGINT, p_run_at TIMESTAMPTZ, p_attempts INT, p_error TEXT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_job plansync.jobs;
    v_twin BIGINT;
BEGIN
    SELECT * INTO STRICT v_job FROM plansync.jobs WHERE id = p_id;
    LOOP
        SELECT id INTO v_twin FROM plansync.jobs
         WHERE state = 'queued' AND kind = v_job.kind AND connection_id = v_job.connection_id
           AND COALESCE(appointment_id, 0) = COALESCE(v_job.appointment_id, 0) AND id <> p_id
         FOR UPDATE;
        IF FOUND THEN
            UPDATE plansync.jobs SET run_at = GREATEST(run_at, p_run_at),
                   attempts = GREATEST(attempts, p_attempts),
                   last_error = COALESCE(p_error, last_error), updated_at = now()
             WHERE id = v_twin;
            UPDATE plansync.jobs SET state = 'superseded', superseded_by = v_twin,
                   claim_token = NULL, locked_by = NULL, locked_until = NULL,
                   finished_at = now(), updated_at = now()
             WHERE id = p_id;
            RETURN v_twin;
        END IF;
        BEGIN
            UPDATE plansync.jobs SET state = 'queued', run_at = p_run_at, attempts = p_attempts,
                   last_error = COALESCE(p_error, last_error),
                   claim_token = NULL, locked_by = NULL, locked_until = NULL, updated_at = now()
             WHERE id = p_id;
            RETURN p_id;
        EXCEPTION WHEN unique_violation THEN
            -- An equal job was enqueued concurrently: go round and fold into it.
        END;
    END LOOP;
END $$;

-- Host triggers -------------------------------------------------------------

-- An UPDATE that leaves updated_at alone gets now().
CREATE FUNCTION plansync.appointments_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER plansync_touch_updated_at
    BEFORE UPDATE ON public.appointments
    FOR EACH ROW EXECUTE FUNCTION plansync.appointments_touch_updated_at();

-- Records local changes for push, one deduplicated job per (connection,
-- appointment). The connection is the one the appointment is linked to; an
-- unlinked appointment goes to the user's push target (the marked active
-- connection, else the first active one). Nothing is recorded for a user
-- without an active connection, nor for an appointment linked to a
-- disconnected calendar. Connections needing re-auth or whose calendar is gone
-- still get the job: it waits, unclaimed, until they are usable again.
CREATE FUNCTION plansync.record_local_changes(p_ids BIGINT[], p_users BIGINT[])
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region)
    SELECT DISTINCT 'push', COALESCE(lc.id, pt.id), ch.id, COALESCE(lc.region, pt.region)
      FROM UNNEST(p_ids, p_users) AS ch(id, user_id)
      LEFT JOIN plansync.links l ON l.appointment_id = ch.id
      LEFT JOIN plansync.connections lc ON lc.id = l.connection_id AND lc.active
      LEFT JOIN LATERAL (
            SELECT c.id, c.region FROM plansync.connections c
             WHERE c.user_id = ch.user_id AND c.active
             ORDER BY c.push_target DESC, c.id LIMIT 1) pt ON l.connection_id IS NULL
     WHERE COALESCE(lc.id, pt.id) IS NOT NULL
    ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) WHERE state = 'queued'
    -- Not DO NOTHING: touching the queued job row-locks it until the host's
    -- transaction ends, so no worker can claim it (claims skip locked rows)
    -- and push the values from before this change.
    DO UPDATE SET updated_at = now()
$$;

-- Statement-level with transition tables: one batched insert per host
-- statement, and one subtransaction (the EXCEPTION block) per statement rather
-- than per row. The worker's own writes (SET LOCAL plansync.origin = 'google')
-- are skipped. A failure becomes a WARNING: the host's write always goes on.
CREATE FUNCTION plansync.appointments_record_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('plansync.origin', true) = 'google' THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM plansync.record_local_changes(
                ARRAY(SELECT id FROM plansync_old_rows), ARRAY(SELECT user_id FROM plansync_old_rows));
        ELSE
            PERFORM plansync.record_local_changes(
                ARRAY(SELECT id FROM plansync_new_rows), ARRAY(SELECT user_id FROM plansync_new_rows));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'plansync: could not record appointment changes for push (%): %', SQLSTATE, SQLERRM;
    END;
    RETURN NULL;
END $$;

CREATE TRIGGER plansync_record_inserts
    AFTER INSERT ON public.appointments REFERENCING NEW TABLE AS plansync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION plansync.appointments_record_changes();
CREATE TRIGGER plansync_record_updates
    AFTER UPDATE ON public.appointments REFERENCING NEW TABLE AS plansync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION plansync.appointments_record_changes();
CREATE TRIGGER plansync_record_deletes
    AFTER DELETE ON public.appointments REFERENCING OLD TABLE AS plansync_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION plansync.appointments_record_changes();
