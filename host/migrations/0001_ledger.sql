-- The shared ledger (ledger.backend = "postgres"); see host/src/ledger/postgres.rs.
-- Migrations are additive only: an older host keeps running against a newer
-- schema during a rolling deploy.

-- Settings every host must agree on (the bucket width), and the cursor key.
CREATE TABLE notify_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Delivery ids: ledger-wide, newer deliveries have larger ids.
CREATE SEQUENCE notify_delivery_ids;

-- Every delivery that is not an open reminder, in time buckets: one
-- partition per bucket of creation time (ms since the epoch), dropped whole
-- by the retention. A record stays in the bucket of its creation.
CREATE TABLE notify_deliveries (
    bucket         bigint NOT NULL,
    id             bigint NOT NULL,
    key            text   NOT NULL,
    event_id       text   NOT NULL,
    channel        text   NOT NULL,
    purpose        text   NOT NULL,
    state          text   NOT NULL,
    appointment_id text   NOT NULL,
    created_ms     bigint NOT NULL,
    updated_ms     bigint NOT NULL,
    -- The record as JSON (text, not jsonb: provider snippets may hold
    -- escapes jsonb refuses).
    record         text   NOT NULL,
    PRIMARY KEY (bucket, id),
    UNIQUE (key, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX notify_deliveries_id ON notify_deliveries (id);
CREATE INDEX notify_deliveries_event ON notify_deliveries (event_id);
CREATE INDEX notify_deliveries_appointment ON notify_deliveries (appointment_id);
CREATE INDEX notify_deliveries_held ON notify_deliveries (channel, id) WHERE state = 'held';

-- Open reminders (scheduled, or being sent): outside the buckets, so the
-- retention never drops one that has not fired; found by due time.
CREATE TABLE notify_timers (
    key            text   PRIMARY KEY,
    id             bigint NOT NULL,
    due_ms         bigint NOT NULL,
    event_id       text   NOT NULL,
    appointment_id text   NOT NULL,
    -- The delivery as JSON.
    record         text   NOT NULL,
    -- The event it renders from (JSON); kept when a write carries none.
    event          text
);
CREATE INDEX notify_timers_due ON notify_timers (due_ms, key);
CREATE INDEX notify_timers_appointment ON notify_timers (appointment_id);
CREATE INDEX notify_timers_event ON notify_timers (event_id);

-- What each appointment's events said; dropped once past by the retention.
CREATE TABLE notify_appointments (
    appointment_id text   PRIMARY KEY,
    expires_ms     bigint NOT NULL,
    state          text   NOT NULL
);
CREATE INDEX notify_appointments_expiry ON notify_appointments (expires_ms);
