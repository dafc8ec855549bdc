-- A link ties one appointment to one Google event of one connection. Matching
-- is by links only, scoped to the connection (DESIGN.md, Sync rules).
--
-- appointment_id deliberately has no foreign key: when the host deletes an
-- appointment, its link must survive until the push job has deleted the Google
-- event it points at.
CREATE TABLE plansync.links (
    id BIGSERIAL PRIMARY KEY,
    connection_id BIGINT NOT NULL REFERENCES plansync.connections(id) ON DELETE CASCADE,
    appointment_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    -- The event as last seen in or written to Google.
    etag TEXT,
    remote_updated_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (connection_id, event_id),
    -- An appointment lives on exactly one calendar.
    UNIQUE (appointment_id)
);
