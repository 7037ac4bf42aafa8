-- Retention: `smsrx db prune`, and status-projection every SMSRX_PRUNE_INTERVAL
-- (smsrx/retention.py has the rules). Each index below lets a prune batch find the rows
-- past their retention, and the oldest row left, without scanning its table.
--
-- On a large existing database, build them first with CREATE INDEX CONCURRENTLY under the
-- same names (docs/operations.md, "Data and privacy"): this migration then skips them,
-- instead of blocking writes to those tables while they build.

-- An inbound SMS whose text was erased keeps its row (sender, times, carrier) until
-- SMSRX_RETAIN_HISTORY; content becomes '' and raw '{}', and this says when.
ALTER TABLE inbound_messages ADD COLUMN IF NOT EXISTS text_erased_at timestamptz;
CREATE INDEX IF NOT EXISTS inbound_messages_recorded_at ON inbound_messages (recorded_at);
CREATE INDEX IF NOT EXISTS inbound_messages_text_kept
    ON inbound_messages (recorded_at) WHERE text_erased_at IS NULL;

-- One more entry per receipt, on an ever-increasing key: measured within the noise of the
-- batch insert (docs/operations.md).
CREATE INDEX IF NOT EXISTS status_events_recorded_at ON status_events (recorded_at);

-- Finished recipients by when they finished. Only the update that makes a row final writes
-- it, and that update is never HOT anyway (is_final is in recipient_status_pending's
-- predicate); updates of unfinished rows stay HOT.
CREATE INDEX IF NOT EXISTS recipient_status_final_at
    ON recipient_status (final_at) WHERE is_final;

CREATE INDEX IF NOT EXISTS submissions_submitted_at ON submissions (submitted_at);
