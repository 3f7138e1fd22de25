-- Svix message ids already processed: a replayed delivery changes nothing. Ids older than the
-- timestamp tolerance can no longer arrive with a valid timestamp, so they are pruned after an hour.
create table webhook_events (
    svix_id     text        primary key,
    event_type  text        not null,
    received_at timestamptz not null default now()
);
create index webhook_events_received_at on webhook_events (received_at);

-- Users Clerk reported deleted (user.deleted), so that a late, older user.updated does not bring
-- them back. `deleted_at` is the event's own time.
create table clerk_deletions (
    clerk_id   text        primary key,
    deleted_at timestamptz not null
);
