-- Channel upkeep without reading every connection each tick (issue 14).
--
-- The scheduler's watch jobs come from two places: channels to stop are
-- found through the channels themselves (the indexes below hold only the
-- channels that may need it), and a connection that wants a channel it lacks
-- is found when the scheduler looks at it anyway (its `poll_at` has come:
-- capped at the moment its fresh channel stops being fresh, and reset by
-- every change of its channels; see store::jobs::schedule_pulls).

-- Retired channels not stopped yet (replaced, disconnect, re-connect).
CREATE INDEX channels_to_stop_idx ON plansync.channels (connection_id)
    WHERE state <> 'stopped' AND retired_at IS NOT NULL;
-- Current channels by address: those at an address other than
-- PLANSYNC_WEBHOOK_URL (it moved) are two range scans of this index.
CREATE INDEX channels_current_address_idx ON plansync.channels (address)
    WHERE state <> 'stopped' AND retired_at IS NULL;
-- Disconnected connections still holding a refresh token (for the stop of
-- their channels).
CREATE INDEX connections_disconnected_token_idx ON plansync.connections (region)
    WHERE NOT active AND refresh_token_enc IS NOT NULL;
