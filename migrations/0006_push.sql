-- Push sync: client-supplied Google event ids.
--
-- An event we insert gets an id we choose, so a retried insert is idempotent
-- (Google answers 409 duplicate). Google keeps the ids of deleted events, so
-- an id must never be reused: it is this deployment's salt, the connection,
-- the appointment and an incarnation drawn from a sequence (a new one for
-- every insert recorded, e.g. re-creating after a remote delete). The salt
-- keeps two deployments (production, a staging copy) that share a calendar
-- from ever choosing the same id; it is generated once, here, and never
-- changes.
CREATE TABLE plansync.deployment (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    -- Lowercase hex: a subset of the base32hex alphabet Google accepts.
    event_id_salt TEXT NOT NULL CHECK (event_id_salt ~ '^[0-9a-f]{16}$')
);
INSERT INTO plansync.deployment (event_id_salt)
VALUES (left(replace(gen_random_uuid()::text, '-', ''), 16));

CREATE SEQUENCE plansync.event_incarnation;

-- A link whose etag IS NULL records an insert that was (or is about to be)
-- sent under its event_id but not yet confirmed by an answer. A retry re-sends
-- the same id; a pull that lists the event confirms it (it stores the etag);
-- a full sync's sweep skips it, since its event may not exist yet.
COMMENT ON COLUMN plansync.links.etag IS
    'The event''s etag as last seen or written; NULL: an insert recorded but not yet confirmed';
