-- status-projection: the current state of every recipient of every message, the full
-- event history, inbound messages, submissions and the status-change outbox.
-- Written by `smsrx consumer status-projection`; see docs/consumers.md.
-- Key columns use the "C" collation: byte order, fast, and the same order as Python's,
-- which the precedence tie-break (event_id) and the lock ordering rely on.

-- Messages a carrier accepted (topic sms.submissions.v1); the first record wins.
CREATE TABLE submissions (
    provider      text COLLATE "C" NOT NULL,
    message_id    text COLLATE "C" NOT NULL,
    event_id      text NOT NULL,
    recipients    text[] NOT NULL,
    submitted_at  timestamptz NOT NULL,
    tags          jsonb NOT NULL DEFAULT '{}',
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, message_id)
);

-- The current truth about each (provider, message_id, recipient).
-- The status is decided by rank (queued 0 < sent 1 < unknown 2 < expired 3 < failed 4
-- < delivered 5), then by the earliest receipt of that rank, then by event_id: never by
-- arrival order. A row made by a submission alone has no status yet (pending).
CREATE TABLE recipient_status (
    provider             text COLLATE "C" NOT NULL,
    message_id           text COLLATE "C" NOT NULL,
    recipient            text COLLATE "C" NOT NULL,
    status               text,
    status_rank          smallint NOT NULL DEFAULT -1,
    is_final             boolean NOT NULL DEFAULT false,
    provider_status      text,
    status_event_id      text COLLATE "C",
    status_at            timestamptz,
    submitted_at         timestamptz,
    first_event_at       timestamptz,
    last_event_at        timestamptz,
    final_at             timestamptz
        GENERATED ALWAYS AS (CASE WHEN is_final THEN status_at END) STORED,
    time_to_final        interval
        GENERATED ALWAYS AS (
            CASE WHEN is_final THEN status_at - coalesce(submitted_at, first_event_at) END
        ) STORED,
    event_count          integer NOT NULL DEFAULT 0,
    expiry_published_at  timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, message_id, recipient),
    CONSTRAINT recipient_status_status_known CHECK (
        status IN ('queued', 'sent', 'unknown', 'expired', 'failed', 'delivered')
    )
) WITH (fillfactor = 80);  -- room on each page for HOT updates: a status change writes no index
-- The expiry sweep looks for recipients without a final status, oldest first.
CREATE INDEX recipient_status_pending
    ON recipient_status ((coalesce(submitted_at, first_event_at)))
    WHERE NOT is_final;

-- Every delivery receipt applied, exactly once (unique by event_id, a UUID per the
-- contract), including late ones that did not change the current status. seq is the
-- order of application. raw is json, not jsonb: the carrier's payload kept verbatim,
-- and cheaper to write on this, the hottest table.
CREATE TABLE status_events (
    event_id         uuid PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    provider         text COLLATE "C" NOT NULL,
    message_id       text COLLATE "C" NOT NULL,
    recipient        text COLLATE "C" NOT NULL,
    status           text NOT NULL,
    provider_status  text NOT NULL,
    synthetic        boolean NOT NULL,
    received_at      timestamptz NOT NULL,
    raw              json NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_events_message_id ON status_events (message_id);

-- Inbound SMS (MO), unique by (provider, message_id): a carrier may notify one twice.
CREATE TABLE inbound_messages (
    provider      text COLLATE "C" NOT NULL,
    message_id    text COLLATE "C" NOT NULL,
    event_id      text NOT NULL,
    sender        text NOT NULL,
    content       text NOT NULL,
    sent_at       timestamptz,
    sent_at_text  text NOT NULL,
    received_at   timestamptz NOT NULL,
    raw           json NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, message_id)
);
CREATE INDEX inbound_messages_received_at ON inbound_messages (received_at);

-- Status changes (the encoded sms.message-status.v1 records) written in the same
-- transaction as the batch that caused them, and deleted once the broker acknowledged them.
CREATE TABLE status_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000) PRIMARY KEY,
    key         text NOT NULL,
    value       json NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
