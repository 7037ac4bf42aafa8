-- Receiver deduplication, shared by every receiver replica.
-- A row is written only after the broker acknowledged the event it names.
CREATE TABLE receiver_dedup (
    event_id     text PRIMARY KEY,
    provider     text NOT NULL,
    message_id   text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX receiver_dedup_published_at ON receiver_dedup (published_at);
