INSERT INTO plansync.jobs (kind, connection_id, region, priority)
         SELECT 'pull', c.id, c.region, 2 FROM plansync.connections c
         CROSS JOIN LATERAL (SELECT CASE WHEN NULL::BIGINT IS NOT NULL AND EXISTS (
                 SELECT 1 FROM plansync.channels ch WHERE ch.connection_id = c.id
                   AND ch.state = 'live' AND ch.retired_at IS NULL AND ch.expires_at > now())
             THEN NULL::BIGINT ELSE 3600::BIGINT END AS secs) iv
         WHERE c.region = 'default' AND c.active AND NOT c.needs_reauth AND NOT c.calendar_gone
           AND (c.last_pull_at IS NULL OR c.last_pull_at < now() - make_interval(secs =>
                 mod(extract(epoch FROM now())::NUMERIC
                     - mod(abs(hashint8(c.id)::BIGINT), iv.secs)::NUMERIC + iv.secs::NUMERIC,
                     iv.secs::NUMERIC)::FLOAT8))
           AND (c.backoff_until IS NULL OR c.backoff_until <= now())
           AND NOT EXISTS (SELECT 1 FROM plansync.jobs j
                           WHERE j.connection_id = c.id AND j.kind IN ('pull', 'full_resync')
                             AND j.state IN ('queued', 'running'))
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) WHERE state = 'queued'
         DO NOTHING;
