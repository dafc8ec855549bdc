INSERT INTO public.users (id) SELECT g FROM generate_series(1, 1000000) g;
INSERT INTO plansync.connections (user_id, calendar_id, region, last_pull_at, refresh_token_enc)
SELECT g, 'primary', 'default', now(), '\x00'::bytea FROM generate_series(1, 1000000) g;
-- 150k finished 2 h ago, 100k queued due pushes (no stuck)
INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, state, finished_at)
SELECT 'push', g, g, 'default', 'succeeded', now() - interval '2 hours' FROM generate_series(1, 150000) g;
INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region)
SELECT 'push', g, g + 1000000, 'default' FROM generate_series(200001, 300000) g;
VACUUM ANALYZE;
