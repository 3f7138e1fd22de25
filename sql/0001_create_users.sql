-- The users the service has seen. `id` is the service's own; `clerk_id` is Clerk's `user_…`.
create table users (
    id               uuid        primary key,
    clerk_id         text        not null unique,
    email            text,
    first_name       text,
    last_name        text,
    username         text,
    image_url        text,
    -- the application's own JSON object, never sent to Clerk
    metadata         jsonb       not null default '{}'::jsonb,
    -- Clerk's own timestamps: clerk_updated_at decides which of two versions is newer
    clerk_created_at timestamptz,
    clerk_updated_at timestamptz,
    -- the record's own timestamps
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint users_metadata_is_object check (jsonb_typeof(metadata) = 'object')
);
