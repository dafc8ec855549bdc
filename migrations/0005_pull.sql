-- Pull sync: mark-and-sweep of full syncs, and conflict records.

-- Each full sync draws a generation and stamps every link its listing shows;
-- after the last page, links of the connection with an older stamp (whose
-- appointments end after the listing's timeMin) were deleted in Google. The
-- stamps are written page by page, so a full sync killed half-way leaves
-- older stamps behind but sweeps nothing: only a completed listing sweeps.
ALTER TABLE plansync.links ADD COLUMN seen_generation BIGINT;
CREATE SEQUENCE plansync.sync_generation;

-- Every overwritten losing version of an appointment, kept for the admin.
CREATE TABLE plansync.conflicts (
    id BIGSERIAL PRIMARY KEY,
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    appointment_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    -- Which side's version survived: 'google' or 'local'.
    winner TEXT NOT NULL CHECK (winner IN ('google', 'local')),
    -- 'edit' (edit vs edit) or 'delete' (a delete beat an edit).
    kind TEXT NOT NULL CHECK (kind IN ('edit', 'delete')),
    -- The loser's appointment columns; NULL when the loser was a delete.
    losing_values JSONB,
    local_updated_at TIMESTAMPTZ,
    remote_updated_at TIMESTAMPTZ,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX conflicts_connection_idx ON plansync.conflicts (connection_id, id DESC);
