#!/bin/sh
# Runs once, on an empty data volume, after 10-databases.sh: the ledger's table, append-only triggers and the
# application role ($ADAPTRAIL_LEDGER_ROLE, INSERT and SELECT only) in the ledger database, as the owner.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$ADAPTRAIL_LEDGER_DB" \
  -v app_role="$ADAPTRAIL_LEDGER_ROLE" -v app_password="$ADAPTRAIL_LEDGER_PASSWORD" \
  -f /docker-entrypoint-initdb.d/ledger-schema.psql
