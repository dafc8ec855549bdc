-- The transactional outbox: one row per emitted delta, written in the same
-- transaction as the change it describes and published to Redis by the relay.
-- (user_id, version) is unique: a user's deltas have strictly increasing
-- versions, the value users.plan_version took when the delta was written.
CREATE TABLE plansync.outbox (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    -- JSON, not JSONB: the text is kept as written, so the relay can splice it
    -- into a message without parsing it again.
    delta JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    UNIQUE (user_id, version)
);
-- The relay's work list, and the status backlog.
CREATE INDEX outbox_unpublished_idx ON plansync.outbox (user_id, version)
    WHERE published_at IS NULL;
-- Pruning of published rows.
CREATE INDEX outbox_published_at_idx ON plansync.outbox (published_at)
    WHERE published_at IS NOT NULL;
