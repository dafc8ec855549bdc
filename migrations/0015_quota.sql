-- Google's quota shared by the fleet: job priorities and worker heartbeats.

-- Lower runs first. Every enqueue gets 1 (host-trigger pushes, connect,
-- resync, notification-driven pulls); the scheduler's polls get 2, so when the
-- budget is short the user-visible work goes first (0 is left for more urgent
-- kinds). A claim orders by (priority, run_at). An enqueue that finds an equal
-- queued job keeps the more urgent priority.
ALTER TABLE plansync.jobs ADD COLUMN priority SMALLINT NOT NULL DEFAULT 1
    CONSTRAINT jobs_priority_check CHECK (priority BETWEEN 0 AND 9);
CREATE INDEX jobs_claim_priority_idx ON plansync.jobs (region, priority, run_at, id)
    WHERE state = 'queued';

-- One row per live worker process, refreshed every few seconds by its loop.
-- When Redis (the shared limiter) is unreachable, each worker takes the
-- budget divided by the workers seen here in the last 30 s; `status` sums
-- `calls_per_min` as the fleet's use. Rows of dead workers age out and are
-- pruned by the next heartbeat of anyone.
CREATE TABLE plansync.workers (
    worker_id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Google calls this worker made in the last minute.
    calls_per_min INT NOT NULL DEFAULT 0,
    -- The polling interval its scheduler last used (seconds).
    poll_interval_secs INT
);
