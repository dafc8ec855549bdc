-- The host schema (DESIGN.md, Contract): created only where absent. Columns the
-- contract needs are added to a host's existing tables when missing; nothing
-- the host already has is altered, and no row is touched.
CREATE TABLE IF NOT EXISTS public.users (
    id BIGINT PRIMARY KEY,
    plan_version BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE public.users ADD COLUMN IF NOT EXISTS plan_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS public.appointments (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES public.users(id),
    summary TEXT NOT NULL,
    description TEXT,
    location TEXT,
    start_at TIMESTAMPTZ NOT NULL,
    end_at TIMESTAMPTZ NOT NULL,
    start_time_zone TEXT,
    end_time_zone TEXT,
    all_day BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE public.appointments
    ADD COLUMN IF NOT EXISTS description TEXT,
    ADD COLUMN IF NOT EXISTS location TEXT,
    ADD COLUMN IF NOT EXISTS start_time_zone TEXT,
    ADD COLUMN IF NOT EXISTS end_time_zone TEXT,
    ADD COLUMN IF NOT EXISTS all_day BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN IF NOT EXISTS created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX IF NOT EXISTS appointments_user_id_idx ON public.appointments (user_id);

-- Everything below belongs to the worker and lives in its own schema.
CREATE TABLE plansync.connections (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    calendar_id TEXT NOT NULL CHECK (calendar_id <> ''),
    region TEXT NOT NULL,
    -- At most one marked per user; with none marked, the user's first active
    -- connection is the implied target (see status and push).
    push_target BOOLEAN NOT NULL DEFAULT FALSE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    -- nonce || AES-256-GCM ciphertext under PLANSYNC_TOKEN_KEY; NULL once disconnected.
    refresh_token_enc BYTEA,
    sync_token TEXT,
    sync_token_at TIMESTAMPTZ,
    -- The calendar's own time zone, learnt from list responses.
    calendar_time_zone TEXT,
    last_pull_at TIMESTAMPTZ,
    needs_reauth BOOLEAN NOT NULL DEFAULT FALSE,
    calendar_gone BOOLEAN NOT NULL DEFAULT FALSE,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, calendar_id)
);
CREATE UNIQUE INDEX connections_one_push_target_per_user
    ON plansync.connections (user_id) WHERE push_target;
CREATE INDEX connections_region_active_idx ON plansync.connections (region) WHERE active;
