-- Least privilege (issue #14): one NOLOGIN group role per service, granted what that
-- service's own statements need and nothing else. Services log in as LOGIN users that
-- are members of their group (ops/postgres/logins.psql creates them in docker-compose;
-- docs/operations.md, "Least privilege"). None of these roles is a superuser, owns a
-- table or the schema, may create anything, or is a member of pg_execute_server_program,
-- pg_read_server_files or pg_write_server_files (no COPY ... TO PROGRAM, no server files).
--
-- Roles belong to the cluster, privileges to this database: the roles are created once
-- (IF NOT EXISTS), and every database `smsrx db migrate` runs on gets its own grants.
-- The migration needs a role that may create roles and grant on these tables: the
-- database owner that runs every migration (a superuser in docker-compose and `smsrx dev`).
--
-- A later migration that adds a table grants it, as this one does, to the roles that use
-- it; tests/test_roles.py fails on a table that no service role may use.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY[
        'smsrx_receiver', 'smsrx_status_projection', 'smsrx_analytics', 'smsrx_inbound',
        'smsrx_reconciler', 'smsrx_prune', 'smsrx_grafana', 'smsrx_watchdog']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                           'NOREPLICATION NOBYPASSRLS', role_name);
        ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name
                         AND (rolsuper OR rolcanlogin OR rolcreatedb OR rolcreaterole
                              OR rolreplication OR rolbypassrls)) THEN
            -- made by hand with more than a group role needs: take it back
            EXECUTE format('ALTER ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                           'NOREPLICATION NOBYPASSRLS', role_name);
        END IF;
    END LOOP;
END $$;

-- Nobody but the owner creates objects, and no session writes temporary tables (a role
-- without a single INSERT grant must have nowhere at all to write). Only the service
-- roles may connect.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE CREATE, TEMPORARY, CONNECT ON DATABASE %I FROM PUBLIC',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO smsrx_receiver, smsrx_status_projection, '
                   'smsrx_analytics, smsrx_inbound, smsrx_reconciler, smsrx_prune, '
                   'smsrx_grafana, smsrx_watchdog', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO smsrx_receiver, smsrx_status_projection, smsrx_analytics,
    smsrx_inbound, smsrx_reconciler, smsrx_prune, smsrx_grafana, smsrx_watchdog;
-- Large objects are the one other place any role could write to.
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
    pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC;

-- `smsrx doctor`, run inside any service's container, reads the migrations applied.
GRANT SELECT ON schema_migrations TO smsrx_receiver, smsrx_status_projection,
    smsrx_analytics, smsrx_inbound, smsrx_reconciler, smsrx_prune;

-- receiver (receiver/dedup.py): looks event ids up, inserts them ON CONFLICT DO NOTHING.
GRANT SELECT, INSERT ON receiver_dedup TO smsrx_receiver;

-- status-projection (consumers/projection_sql.py, expiry.py, outbox.py, status_cli.py):
-- appends history, submissions and inbound SMS, upserts the current status (the expiry
-- sweep claims rows by updating them), and empties its outbox. status_events.seq and
-- status_outbox.id are identity columns: inserting needs no grant on their sequences.
GRANT SELECT, INSERT ON submissions, status_events, inbound_messages TO smsrx_status_projection;
GRANT SELECT, INSERT, UPDATE ON recipient_status TO smsrx_status_projection;
GRANT SELECT, INSERT, DELETE ON status_outbox TO smsrx_status_projection;

-- analytics (consumers/analytics_sql.py): marks events counted, adds to the rollups.
GRANT SELECT, INSERT ON analytics_processed_events TO smsrx_analytics;
GRANT SELECT, INSERT, UPDATE ON analytics_receipts_minute, analytics_inbound_minute,
    analytics_outcomes_minute, analytics_latency_hour TO smsrx_analytics;
GRANT SELECT ON delivery_rate_daily, delivery_rate_provider_daily, receipts_daily,
    time_to_final_daily TO smsrx_analytics;

-- inbound (consumers/optouts_sql.py, optouts_cli.py): the suppression list and the ids of
-- the inbound SMS it routed. It never reads inbound_messages: the events come from Kafka.
GRANT SELECT, INSERT ON optout_events, inbound_routed TO smsrx_inbound;
GRANT SELECT, INSERT, UPDATE ON suppressions TO smsrx_inbound;

-- subscriptions reconciler (subscriptions/store.py).
GRANT SELECT, INSERT, UPDATE ON orange_subscriptions TO smsrx_reconciler;

-- prune (smsrx/retention.py, smsrx/prune.py): deletes what is past its retention and
-- blanks the text of old inbound SMS. It locks the rows of a batch FOR UPDATE SKIP LOCKED,
-- which needs UPDATE on one column of each table: the time its retention counts from.
-- The suppression list, the outbox and the subscriptions are never pruned. Only
-- `smsrx db prune` (by hand, or --every in its own process) runs as this role: no
-- service is a member of it.
GRANT SELECT, DELETE ON receiver_dedup, analytics_processed_events, inbound_routed,
    status_events, recipient_status, submissions, inbound_messages,
    analytics_receipts_minute, analytics_inbound_minute, analytics_outcomes_minute,
    analytics_latency_hour TO smsrx_prune;
GRANT UPDATE (published_at) ON receiver_dedup TO smsrx_prune;
GRANT UPDATE (processed_at) ON analytics_processed_events TO smsrx_prune;
GRANT UPDATE (routed_at) ON inbound_routed TO smsrx_prune;
GRANT UPDATE (recorded_at) ON status_events, submissions TO smsrx_prune;
GRANT UPDATE (updated_at) ON recipient_status TO smsrx_prune;
GRANT UPDATE (minute) ON analytics_receipts_minute, analytics_inbound_minute,
    analytics_outcomes_minute TO smsrx_prune;
GRANT UPDATE (hour) ON analytics_latency_hour TO smsrx_prune;
GRANT UPDATE (content, raw) ON inbound_messages TO smsrx_prune;
DO $$
BEGIN
    -- 0006_retention's column: granted here only if that migration ran first
    IF EXISTS (SELECT FROM pg_attribute
                WHERE attrelid = 'inbound_messages'::regclass
                  AND attname = 'text_erased_at' AND NOT attisdropped) THEN
        GRANT UPDATE (text_erased_at) ON inbound_messages TO smsrx_prune;
    END IF;
END $$;

-- Grafana reads aggregates only: the analytics rollups and views (counts by minute,
-- provider, country and status) and the two views below. Never a phone number, an SMS
-- text or a carrier payload.
-- Recipients still without a final status, counted: the Delivery dashboard's "pending".
CREATE VIEW recipients_pending WITH (security_barrier) AS
SELECT provider, status, count(*) AS pending,
       min(coalesce(submitted_at, first_event_at)) AS oldest_since
  FROM recipient_status
 WHERE NOT is_final
 GROUP BY provider, status;

-- Opt-out and opt-in events without the number, the inbound message id or the reason.
CREATE VIEW optout_activity AS
SELECT recorded_at, occurred_at, action, source, keyword, provider
  FROM optout_events;

GRANT SELECT ON analytics_receipts_minute, analytics_inbound_minute, analytics_outcomes_minute,
    analytics_latency_hour, delivery_rate_daily, delivery_rate_provider_daily,
    receipts_daily, time_to_final_daily, recipients_pending, optout_activity TO smsrx_grafana;
GRANT SELECT ON recipients_pending TO smsrx_status_projection;
GRANT SELECT ON optout_activity TO smsrx_inbound;

-- Grafana's time limit. A role's statement_timeout and default_transaction_read_only are
-- only defaults its own session may SET again, and a function's SET clause does not bound
-- the statement that calls it. So the limit is enforced from outside the session: the
-- watchdog (docker-compose service `grafana-watchdog`) calls this every few seconds, and
-- it cancels a Grafana statement running longer than `longest`, and ends a Grafana
-- session that is idle in a transaction that long, holds an advisory lock (that would
-- block the expiry sweep or a migration), or whose statement outlived its cancel. Writing
-- is not a setting either: smsrx_grafana holds no grant that writes.
CREATE FUNCTION smsrx_grafana_watchdog(longest interval DEFAULT '30 seconds')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    session record;
    signalled integer := 0;
BEGIN
    IF NOT (pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
            AND pg_has_role(current_user, 'pg_signal_backend', 'USAGE')) THEN
        RAISE EXCEPTION 'smsrx_grafana_watchdog: its owner % needs pg_read_all_stats and '
                        'pg_signal_backend', current_user;
    END IF;
    FOR session IN
        SELECT a.pid,
               a.state = 'active' AND clock_timestamp() - a.query_start > longest * 2
               OR a.state LIKE 'idle in transaction%'
               OR EXISTS (SELECT FROM pg_locks l
                           WHERE l.pid = a.pid AND l.locktype = 'advisory') AS terminate
          FROM pg_stat_activity a
          JOIN pg_roles r ON r.oid = a.usesysid
         WHERE a.pid <> pg_backend_pid()
           AND NOT r.rolsuper
           AND pg_has_role(a.usesysid, 'smsrx_grafana', 'MEMBER')
           AND (a.state = 'active' AND clock_timestamp() - a.query_start > longest
                OR a.state LIKE 'idle in transaction%' AND clock_timestamp() - a.state_change > longest
                OR EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'))
    LOOP
        IF session.terminate THEN
            PERFORM pg_terminate_backend(session.pid);
        ELSE
            PERFORM pg_cancel_backend(session.pid);
        END IF;
        signalled := signalled + 1;
    END LOOP;
    RETURN signalled;
END
$$;
REVOKE ALL ON FUNCTION smsrx_grafana_watchdog(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsrx_grafana_watchdog(interval) TO smsrx_watchdog;

-- Revoke what a hand-made role of the same name may have been given.
DO $$
DECLARE
    role_name text;
    dangerous text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY[
        'smsrx_receiver', 'smsrx_status_projection', 'smsrx_analytics', 'smsrx_inbound',
        'smsrx_reconciler', 'smsrx_prune', 'smsrx_grafana', 'smsrx_watchdog']
    LOOP
        FOREACH dangerous IN ARRAY ARRAY[
            'pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files',
            'pg_signal_backend', 'pg_read_all_data', 'pg_write_all_data']
        LOOP
            IF EXISTS (SELECT FROM pg_auth_members m
                         JOIN pg_roles g ON g.oid = m.roleid
                         JOIN pg_roles u ON u.oid = m.member
                        WHERE g.rolname = dangerous AND u.rolname = role_name) THEN
                EXECUTE format('REVOKE %I FROM %I', dangerous, role_name);
            END IF;
        END LOOP;
    END LOOP;
END $$;
