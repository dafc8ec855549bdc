-- A running job's two fenced transitions as functions (issue 19), so a sync
-- job can fold them into the statement that opens its transaction instead
-- of spending a round trip on each, and every caller shares one definition
-- of what "extend the lease" and "succeed" write.
--
-- Both are fenced by the claim token: they change nothing and return FALSE
-- when the lease is no longer the caller's (rescued, or already finished).
-- Both lock the job row until the caller's transaction ends, so a rescue
-- cannot slip in before it commits.

CREATE FUNCTION plansync.extend_job_lease(p_id BIGINT, p_token UUID, p_lease_secs DOUBLE PRECISION)
RETURNS BOOLEAN LANGUAGE sql VOLATILE AS $$
    WITH extended AS (
        UPDATE plansync.jobs SET locked_until = now() + make_interval(secs => p_lease_secs)
         WHERE id = p_id AND claim_token = p_token AND state = 'running'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM extended)
$$;

CREATE FUNCTION plansync.complete_job(p_id BIGINT, p_token UUID)
RETURNS BOOLEAN LANGUAGE sql VOLATILE AS $$
    WITH completed AS (
        UPDATE plansync.jobs SET state = 'succeeded', claim_token = NULL, locked_until = NULL,
               last_error = NULL, finished_at = now(), updated_at = now()
         WHERE id = p_id AND claim_token = p_token AND state = 'running'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM completed)
$$;

-- The event id of a push's insert, as `sync::push::event_id` spells it (the
-- deployment's salt, then the connection, the appointment and the
-- incarnation in hex, separated by letters beyond `f`: base32hex, and
-- distinct inputs never meet). The claim of a push job records it in the
-- appointment's new link in the claim's own statement, so the id is durable
-- before the insert is sent without a round trip of its own; a test holds
-- this spelling and the Rust one to each other.
CREATE FUNCTION plansync.event_id(p_connection BIGINT, p_appointment BIGINT, p_incarnation BIGINT)
RETURNS TEXT LANGUAGE sql STABLE AS $$
    SELECT d.event_id_salt || 'g' || to_hex(p_connection) || 'h' || to_hex(p_appointment)
           || 'i' || to_hex(p_incarnation)
      FROM plansync.deployment d
$$;
