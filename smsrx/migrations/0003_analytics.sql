-- analytics: per-minute rollups, latency histograms and delivery-rate views.
-- Written by `smsrx consumer analytics`; see docs/consumers.md.

-- Every event counted (by its UUID event_id), so that a replayed event is never counted twice.
CREATE TABLE analytics_processed_events (
    event_id      uuid PRIMARY KEY,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analytics_processed_events_processed_at ON analytics_processed_events (processed_at);

-- Delivery receipts by the minute smsrx received them (UTC), provider, recipient country
-- (ISO 3166 alpha-3, ZZZ when unknown) and canonical status; synthetic 'expired' included.
CREATE TABLE analytics_receipts_minute (
    minute    timestamptz NOT NULL,
    provider  text NOT NULL,
    country   text NOT NULL,
    status    text NOT NULL,
    events    bigint NOT NULL,
    PRIMARY KEY (minute, provider, country, status)
);

-- Inbound SMS by minute received, provider and sender country.
CREATE TABLE analytics_inbound_minute (
    minute    timestamptz NOT NULL,
    provider  text NOT NULL,
    country   text NOT NULL,
    messages  bigint NOT NULL,
    PRIMARY KEY (minute, provider, country)
);

-- Final outcomes of recipients, by cohort minute: the minute of submission (or of the
-- first receipt when the submission is unknown). A recipient whose final status is
-- replaced (failed, then delivered) moves from one status to the other: +1 and -1.
-- Summed over a cohort, each recipient counts once, under its current final status.
CREATE TABLE analytics_outcomes_minute (
    minute      timestamptz NOT NULL,
    provider    text NOT NULL,
    country     text NOT NULL,
    status      text NOT NULL,
    recipients  bigint NOT NULL,
    PRIMARY KEY (minute, provider, country, status)
);

-- Time to a recipient's first final status, as non-cumulative bucket counts: each sample
-- is counted in the first bucket whose upper bound `le` (seconds) holds it. `since` is
-- 'submission' or 'first_receipt'; `hour` is when the final status was reached.
CREATE TABLE analytics_latency_hour (
    hour      timestamptz NOT NULL,
    provider  text NOT NULL,
    country   text NOT NULL,
    since     text NOT NULL CHECK (since IN ('submission', 'first_receipt')),
    status    text NOT NULL,
    le        double precision NOT NULL,
    samples   bigint NOT NULL,
    PRIMARY KEY (hour, provider, country, since, status, le)
);

-- Delivery rate per cohort day (UTC), provider and country: delivered / final outcomes.
CREATE VIEW delivery_rate_daily AS
SELECT day, provider, country, delivered, failed, expired, final,
       round(delivered::numeric / nullif(final, 0), 4) AS delivery_rate
  FROM (SELECT (minute AT TIME ZONE 'UTC')::date AS day,
               provider,
               country,
               coalesce(sum(recipients) FILTER (WHERE status = 'delivered'), 0)::bigint AS delivered,
               coalesce(sum(recipients) FILTER (WHERE status = 'failed'), 0)::bigint AS failed,
               coalesce(sum(recipients) FILTER (WHERE status = 'expired'), 0)::bigint AS expired,
               sum(recipients)::bigint AS final
          FROM analytics_outcomes_minute
         GROUP BY 1, 2, 3) AS outcomes;

-- The same, per provider and day over every country.
CREATE VIEW delivery_rate_provider_daily AS
SELECT day, provider, delivered, failed, expired, final,
       round(delivered::numeric / nullif(final, 0), 4) AS delivery_rate
  FROM (SELECT day, provider,
               sum(delivered)::bigint AS delivered,
               sum(failed)::bigint AS failed,
               sum(expired)::bigint AS expired,
               sum(final)::bigint AS final
          FROM delivery_rate_daily
         GROUP BY 1, 2) AS outcomes;

-- Receipts per day, provider, country and status.
CREATE VIEW receipts_daily AS
SELECT (minute AT TIME ZONE 'UTC')::date AS day, provider, country, status,
       sum(events)::bigint AS events
  FROM analytics_receipts_minute
 GROUP BY 1, 2, 3, 4;

-- Cumulative latency histogram per day, provider and `since`, Prometheus-style:
-- `samples` is the number of recipients whose time to final was at most `le` seconds.
CREATE VIEW time_to_final_daily AS
SELECT day, provider, since, le,
       (sum(samples) OVER (PARTITION BY day, provider, since ORDER BY le))::bigint AS samples
  FROM (SELECT (hour AT TIME ZONE 'UTC')::date AS day, provider, since, le, sum(samples) AS samples
          FROM analytics_latency_hour
         GROUP BY 1, 2, 3, 4) AS buckets;
