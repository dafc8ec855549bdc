DELETE FROM plansync.jobs WHERE id IN (
             (SELECT id FROM plansync.jobs
              WHERE state IN ('succeeded', 'superseded')
                AND finished_at < now() - make_interval(secs => 3600::float8) LIMIT 10000)
             UNION ALL
             (SELECT id FROM plansync.jobs
              WHERE state = 'dead' AND finished_at < now() - make_interval(secs => 604800::float8)
              LIMIT 10000));
