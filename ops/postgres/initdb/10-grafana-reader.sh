#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: creates
# grafana_reader, the login of Grafana's PostgreSQL datasource, a member of smsrx_grafana
# only. The db-logins job runs the same file again on every `docker compose up`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader_password="$GRAFANA_PG_PASSWORD" \
     -f /docker-entrypoint-initdb.d/grafana-reader.psql
