#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory:
# creates the read-only role Grafana's PostgreSQL datasource logs in with.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_password="$GRAFANA_PG_PASSWORD" \
     -f /docker-entrypoint-initdb.d/grafana-reader.psql
