-- Status polling (issue #12): the poller's schedule, and how each receipt was learnt.
-- Written by `smsrx consumer poller` (group smsrx-poller); see docs/consumers.md.

-- How smsrx learnt a receipt (push: a carrier callback or the expiry sweep; poll: the
-- poller asked the carrier's status API), and when the carrier says it happened.
ALTER TABLE status_events
    ADD COLUMN source text NOT NULL DEFAULT 'push'
        CONSTRAINT status_events_source_known CHECK (source IN ('push', 'poll')),
    ADD COLUMN occurred_at timestamptz;

-- One row per (provider, message_id, recipient) whose status the poller asks for.
-- due_at is when the next poll is due; NULL once polling ended (done_reason says why:
-- final, horizon, not_found, or erased by `smsrx privacy erase`). A row being polled has its due_at pushed one lease ahead,
-- so a poller killed mid-poll polls it again once, after the lease, and never loses it.
CREATE TABLE poll_schedule (
    provider              text COLLATE "C" NOT NULL,
    message_id            text COLLATE "C" NOT NULL,
    recipient             text COLLATE "C" NOT NULL,
    submitted_at          timestamptz,
    due_at                timestamptz,
    polls                 integer NOT NULL DEFAULT 0,
    failures              integer NOT NULL DEFAULT 0,
    last_polled_at        timestamptz,
    last_outcome          text,
    last_provider_status  text,
    done_reason           text,
    done_at               timestamptz,
    PRIMARY KEY (provider, message_id, recipient),
    CONSTRAINT poll_schedule_done CHECK ((due_at IS NULL) = (done_reason IS NOT NULL)),
    CONSTRAINT poll_schedule_reason_known CHECK (
        done_reason IN ('final', 'horizon', 'not_found', 'erased'))
) WITH (fillfactor = 80);
CREATE INDEX poll_schedule_due ON poll_schedule (provider, due_at) WHERE due_at IS NOT NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsrx_poller') THEN
        CREATE ROLE smsrx_poller NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION NOBYPASSRLS;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO smsrx_poller', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO smsrx_poller;
GRANT SELECT ON schema_migrations TO smsrx_poller;
GRANT SELECT, INSERT, UPDATE ON poll_schedule TO smsrx_poller;
-- `smsrx status` (as the status-projection role) shows the next poll; prune ages rows out.
GRANT SELECT ON poll_schedule TO smsrx_status_projection;
GRANT SELECT, DELETE ON poll_schedule TO smsrx_prune;
GRANT UPDATE (done_at) ON poll_schedule TO smsrx_prune;
-- Retention prunes finished rows by done_at (smsrx/retention.py).
CREATE INDEX poll_schedule_done_at ON poll_schedule (done_at) WHERE done_at IS NOT NULL;
