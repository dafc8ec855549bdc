INSERT INTO plansync.jobs (kind, connection_id, region)
         SELECT 'watch', c.id, c.region FROM plansync.connections c
         WHERE c.region = 'default'
           AND NOT EXISTS (SELECT 1 FROM plansync.jobs j
                           WHERE j.connection_id = c.id AND j.kind = 'watch'
                             AND (j.state = 'running' OR (j.state = 'dead'
                                  AND j.finished_at > now() - interval '1 hour')))
           AND (((c.refresh_token_enc IS NOT NULL OR c.subject IS NOT NULL) AND EXISTS (
                    SELECT 1 FROM plansync.channels ch
                    WHERE ch.connection_id = c.id AND ch.state <> 'stopped'
                      AND (ch.retired_at IS NOT NULL OR NOT c.active
                           OR NULL::TEXT IS NULL OR ch.address <> NULL)))
             OR (NULL::TEXT IS NOT NULL AND c.active AND NOT c.needs_reauth))
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0)))
             WHERE state = 'queued'
         DO UPDATE SET run_at = now(), updated_at = now()
             WHERE plansync.jobs.attempts = 0 AND plansync.jobs.run_at > now();
