-- Orange delivery-receipt subscriptions we made, one row per subscription id.
-- Orange keeps one callback URL per account; the newest row not 'removed' for a sender
-- is the one we believe is registered. Rows are never deleted, so 'list' shows history.
CREATE TABLE orange_subscriptions (
    id                  text PRIMARY KEY,
    sender              text NOT NULL,
    notify_url          text NOT NULL,
    state               text NOT NULL DEFAULT 'active'
                        CHECK (state IN ('active', 'drifted', 'unknown', 'removed')),
    detail              text,
    observed_notify_url text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_checked_at     timestamptz,
    removed_at          timestamptz
);
CREATE INDEX orange_subscriptions_live ON orange_subscriptions (sender, created_at DESC)
    WHERE state <> 'removed';
