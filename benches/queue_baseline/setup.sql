-- :conns connections, :stuck of them needs-reauth with :per_stuck due pushes each,
-- the rest get healthy due pushes so :healthy_jobs in all.
INSERT INTO public.users (id) SELECT g FROM generate_series(1, :conns) g;
INSERT INTO plansync.connections (id, user_id, calendar_id, region, needs_reauth, last_pull_at)
SELECT g, g, 'cal' || g, 'default', g <= :stuck, now() - interval '10 seconds'
FROM generate_series(1, :conns) g;
SELECT setval('plansync.connections_id_seq', :conns);
-- stuck: older run_at, so a claim in (priority, run_at) order meets them first
INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, run_at)
SELECT 'push', c, c * 1000 + k, 'default', now() - interval '1 hour' + (k || ' ms')::interval
FROM generate_series(1, :stuck) c, generate_series(1, :per_stuck) k;
INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, run_at)
SELECT 'push', :stuck + 1 + (g % (:conns - :stuck)), 100000000 + g, 'default', now() - interval '10 minutes'
FROM generate_series(1, :healthy_jobs) g;
ANALYZE;
