#!/bin/sh
# Runs once, on an empty data volume: the ledger's and Prefect's databases beside MLflow's ($POSTGRES_DB).
set -eu
for db in "$ADAPTRAIL_LEDGER_DB" "$PREFECT_DB"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE \"$db\""
done
