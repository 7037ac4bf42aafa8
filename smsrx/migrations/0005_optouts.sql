-- inbound: the suppression list (opt-outs) and the inbound messages already routed.
-- Written by `smsrx consumer inbound`; see docs/inbound.md.

-- Every opt-out and opt-in ever applied (sms.opt-outs.v1), once per event_id.
CREATE TABLE optout_events (
    event_id            uuid PRIMARY KEY,
    phone               text COLLATE "C" NOT NULL,
    action              text NOT NULL CHECK (action IN ('opt_out', 'opt_in')),
    keyword             text,
    provider            text,
    inbound_message_id  text,
    occurred_at         timestamptz NOT NULL,
    received_at         timestamptz NOT NULL,
    source              text NOT NULL CHECK (source IN ('keyword', 'api')),
    reason              text,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX optout_events_phone ON optout_events (phone, occurred_at);
CREATE INDEX optout_events_recorded_at ON optout_events (recorded_at);

-- The current state of each number: its latest event by (occurred_at, event_id).
-- A number is suppressed while that event is an opt-out.
CREATE TABLE suppressions (
    phone        text COLLATE "C" PRIMARY KEY,
    suppressed   boolean NOT NULL,
    keyword      text,
    source       text NOT NULL,
    provider     text,
    reason       text,
    occurred_at  timestamptz NOT NULL,
    event_id     uuid NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suppressions_suppressed ON suppressions (occurred_at) WHERE suppressed;

-- Inbound messages (sms.inbound.v1 event ids) whose opt-out and route were published,
-- so that a message notified twice, or a replay of the topic, publishes nothing again.
CREATE TABLE inbound_routed (
    event_id    uuid PRIMARY KEY,
    route       text NOT NULL,
    routed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_routed_routed_at ON inbound_routed (routed_at);
