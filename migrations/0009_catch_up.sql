-- Catch-up and the user's Google link in the plan.

-- Per user, the highest outbox version the relay has pruned. A catch-up
-- request for versions after N is answerable only when N is at least this
-- watermark: below it, some of the worker's deltas are gone and the client
-- must reload the plan (410).
CREATE TABLE plansync.outbox_pruned (
    user_id BIGINT PRIMARY KEY REFERENCES public.users(id) ON DELETE CASCADE,
    version BIGINT NOT NULL
);

-- The link state the user was last told about through a `plan` delta
-- (section "google-calendar"). A delta goes out only when the connection's
-- needs_reauth / calendar_gone differ from these, so repeated failures of an
-- already broken connection emit nothing new. Existing connections start as
-- announced in their current state, so nothing is emitted by migrating.
ALTER TABLE plansync.connections
    ADD COLUMN announced_needs_reauth BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN announced_calendar_gone BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE plansync.connections
SET announced_needs_reauth = needs_reauth, announced_calendar_gone = calendar_gone;
