SELECT count(*),
             COALESCE(extract(epoch FROM now() - min(j.run_at) FILTER (
                 WHERE j.run_at <= now() AND c.active AND NOT c.needs_reauth
                   AND NOT c.calendar_gone))::FLOAT8, 0)
         FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id
         WHERE j.state = 'queued' AND (NULL::BIGINT IS NULL OR c.user_id = NULL);
