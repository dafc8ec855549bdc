-- Google push-notification channels (events.watch), one row per channel we
-- ever asked Google to open. See src/sync/watch.rs for the life cycle.
--
-- A row is written *before* events.watch is called (state 'opening', in a
-- transaction fenced by the watch job's claim), so a worker killed while
-- Google opens the channel leaves a trace the retry finds and stops: the
-- retry opens its own channel and then stops the pending one with the
-- resource id Google gave it (stable per watched calendar).
CREATE TABLE plansync.channels (
    -- Our random channel id (sent as `id`, echoed as X-Goog-Channel-ID).
    id UUID PRIMARY KEY,
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    -- SHA-256 of the random per-channel token Google echoes in
    -- X-Goog-Channel-Token. The token itself is never stored: it has 256 bits
    -- of entropy, so a plain hash is as good as a slow one.
    token_hash BYTEA NOT NULL CHECK (length(token_hash) = 32),
    -- The PLANSYNC_WEBHOOK_URL the channel was opened with: a channel whose
    -- address is no longer the configured one is replaced.
    address TEXT NOT NULL,
    -- opening: recorded, events.watch not answered (yet);
    -- live: Google answered; stopped: channels.stop ran (or was given up).
    state TEXT NOT NULL DEFAULT 'opening'
        CHECK (state IN ('opening', 'live', 'stopped')),
    -- Google's id of the watched resource (needed by channels.stop).
    resource_id TEXT,
    opened_at TIMESTAMPTZ,
    -- The expiration Google granted.
    expires_at TIMESTAMPTZ,
    -- Set when the channel was replaced or is to be stopped (disconnect,
    -- re-connect, webhook removed or moved). Notifications of a retired
    -- channel are answered 200 and ignored for 7 days.
    retired_at TIMESTAMPTZ,
    stopped_at TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT channels_live_has_resource CHECK (state <> 'live' OR resource_id IS NOT NULL),
    CONSTRAINT channels_stopped_is_retired CHECK (state <> 'stopped' OR retired_at IS NOT NULL)
);
CREATE INDEX channels_unstopped_idx ON plansync.channels (connection_id) WHERE state <> 'stopped';
CREATE INDEX channels_retired_idx ON plansync.channels (retired_at) WHERE retired_at IS NOT NULL;
