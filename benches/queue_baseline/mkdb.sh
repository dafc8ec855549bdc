#!/bin/bash
# mkdb.sh DB MIGRATIONS_DIR conns stuck per_stuck healthy_jobs
set -e
DB=$1; MIG=$2
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql -h 127.0.0.1 -U postgres -d $DB -qc "CREATE SCHEMA plansync"
for f in $MIG/*.sql; do psql -h 127.0.0.1 -U postgres -d $DB -q -v ON_ERROR_STOP=1 -f $f; done
psql -h 127.0.0.1 -U postgres -d $DB -q -v ON_ERROR_STOP=1 -v conns=$3 -v stuck=$4 -v per_stuck=$5 -v healthy_jobs=$6 -f /tmp/qbase/setup.sql
