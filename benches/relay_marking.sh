#!/usr/bin/env bash
# The cost of marking 2,000 outbox rows published, before and after
# migration 0018, on one database (BENCHMARKS.md, "relay").
#
# A scratch database gets migrations 0001-0017 (the `published_at` marking)
# and a published history of 100,000 rows of 1,000 users (what the retention
# period keeps); then, five times, 2,000 one-change statements (2 per user)
# are written and the relay's statements of that schema are timed: reading
# the batch, and marking it (`UPDATE ... SET published_at`). Then 0018 is
# applied to the same database and the same is done with the pending
# entries: the claim's statement (read and delete in one), and the DELETE of
# 2,000 entries alone. Medians of five, in ms, from psql's \timing.
#
# Usage: benches/relay_marking.sh   (DATABASE_URL's server, default local)
set -euo pipefail
cd "$(dirname "$0")/.."

DB_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/plansync}
SERVER=$(printf '%s' "$DB_URL" | sed -E 's#^(postgres(ql)?://[^/?]+).*#\1#')
DB=plansync_marking_$$
URL="$SERVER/$DB"
drop() { psql "$SERVER/postgres" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; }
trap drop EXIT
psql "$SERVER/postgres" -qAtc "CREATE DATABASE $DB"
q() { PGOPTIONS="-c client_min_messages=warning" psql "$URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

q -c "CREATE SCHEMA plansync"
for f in migrations/00*.sql; do
  # 0001 re-adds host columns IF NOT EXISTS: its notices are noise here.
  case $(basename "$f") in 0018_* | 0019_* | 002*) continue ;; esac
  q -f "$f" >/dev/null
done

delta="json_build_object('itemType','appointment','entityId',u,'action','updated','version',v,
  'source','google','data',json_build_object('appointment',json_build_object('summary',repeat('x',560))))"
q <<SQL
INSERT INTO users (id) SELECT generate_series(1, 1000);
INSERT INTO plansync.outbox (user_id, version, delta, published_at)
SELECT u, v, $delta, now()
  FROM (SELECT 1 + g % 1000 AS u, 1 + g / 1000 AS v FROM generate_series(0, 99999) g) s;
UPDATE users SET plan_version = 100;
VACUUM ANALYZE;
SQL

# 2,000 one-change statements, as 2,000 one-change transactions leave them.
fill="DO \$\$ DECLARE u BIGINT; v BIGINT; BEGIN
  FOR k IN 1..2 LOOP FOR u IN 1..1000 LOOP
    UPDATE users SET plan_version = plan_version + 1 WHERE id = u RETURNING plan_version INTO v;
    INSERT INTO plansync.outbox (user_id, version, delta) VALUES (u, v, $delta);
  END LOOP; END LOOP; END \$\$;"

# Prints the \timing of each statement after the marker, one per line.
timed() { grep -A1000 '^-- timed' | grep -o 'Time: [0-9.]*' | cut -d' ' -f2; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

before_read=() before_mark=()
for _ in 1 2 3 4 5; do
  out=$(q <<SQL
$fill
SELECT array_agg(DISTINCT user_id) AS users FROM plansync.outbox WHERE published_at IS NULL \gset
SELECT array_agg(id) AS ids FROM plansync.outbox WHERE published_at IS NULL \gset
\echo -- timed
\timing on
\o /dev/null
SELECT id, user_id, version, delta::TEXT FROM plansync.outbox
 WHERE published_at IS NULL AND user_id = ANY(:'users'::BIGINT[])
 ORDER BY user_id, version LIMIT 2000;
UPDATE plansync.outbox SET published_at = now() WHERE id = ANY(:'ids'::BIGINT[]);
SQL
  )
  mapfile -t t < <(printf '%s\n' "$out" | timed)
  before_read+=("${t[0]}") before_mark+=("${t[1]}")
done

q -f migrations/0018_outbox_pending.sql >/dev/null
q -c "VACUUM ANALYZE"

after_claim=() after_mark=()
for round in 1 2 3 4 5 6 7 8 9 10; do
  if ((round % 2)); then
    out=$(q <<SQL
$fill
SELECT array_agg(DISTINCT user_id) AS users FROM plansync.outbox_pending \gset
\echo -- timed
\timing on
\o /dev/null
BEGIN;
WITH chosen AS (
  SELECT tid, sum(rows) OVER (ORDER BY user_id, first_version) - rows AS before
    FROM (SELECT ctid AS tid, user_id, first_version, rows FROM plansync.outbox_pending
           WHERE user_id = ANY(:'users'::BIGINT[]) ORDER BY user_id, first_version LIMIT 2000) e),
taken AS (
  DELETE FROM plansync.outbox_pending p
   WHERE p.ctid = ANY(ARRAY(SELECT tid FROM chosen WHERE before < 2000))
  RETURNING p.user_id, p.first_version, p.last_version)
SELECT t.user_id, o.version, o.delta FROM taken t
 CROSS JOIN LATERAL (SELECT o.version, o.delta::TEXT FROM plansync.outbox o
                      WHERE o.user_id = t.user_id AND o.version BETWEEN t.first_version AND t.last_version
                      OFFSET 0) o;
COMMIT;
SQL
    )
    mapfile -t t < <(printf '%s\n' "$out" | timed)
    after_claim+=("${t[1]}")
  else
    out=$(q <<SQL
$fill
SELECT array_agg(user_id) AS users, array_agg(first_version) AS firsts FROM plansync.outbox_pending \gset
\echo -- timed
\timing on
BEGIN;
DELETE FROM plansync.outbox_pending p USING UNNEST(:'users'::BIGINT[], :'firsts'::BIGINT[]) AS t(u, f)
 WHERE p.user_id = t.u AND p.first_version = t.f;
COMMIT;
SQL
    )
    mapfile -t t < <(printf '%s\n' "$out" | timed)
    after_mark+=("${t[1]}")
  fi
done

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "before (0017): read 2,000 rows $(printf '%s\n' "${before_read[@]}" | median) ms," \
  "mark them (UPDATE published_at) $(printf '%s\n' "${before_mark[@]}" | median) ms"
echo "after (0018): claim statement (read + delete entries) $(printf '%s\n' "${after_claim[@]}" | median) ms," \
  "delete 2,000 entries alone $(printf '%s\n' "${after_mark[@]}" | median) ms"
echo "samples: before read ${before_read[*]}; before mark ${before_mark[*]};" \
  "after claim ${after_claim[*]}; after delete ${after_mark[*]}"
