#!/usr/bin/env bash
# Keystone's benchmark in one command, on `keystone gen` data (release build):
#   benches/run.sh [1m|10m] [RUNS]     (default 1m: 100 000 people ≈ 1 M events; 3 runs)
#   SKIP_BUILD=1 uses the release binaries already built.
#   BENCH_DIR=DIR keeps the work folder (data, lakes, raw results).
# Phases, each run RUNS times (median and min–max reported):
#   ingest (batch)   keystone ingest of the NDJSON + store CSV into a fresh lake
#                    floor: JSON parsing alone of the same file (json_floor)
#   ingest (HTTP)    the collector under 16 connections sending batches of 100
#                    floor: JSON parsing alone of the load generator's events
#   resolve          full identity resolution + profile build on a fresh copy
#   identity graph   the part of resolve that reads identifiers and links them
#                    peer: label propagation to a fixed point in DuckDB SQL
#   profile build    the part of resolve that builds `profiles` (its report)
#   segments         materialise 20 segments (the set of benches/segments.sh)
#   query suite      12 analyst queries over Flight SQL against DuckDB on the
#                    same Parquet files, answers checked equal; floor: a
#                    scan-only read of the columns each query reads
# Answers are checked (rows landed, acknowledged = stored, equal query
# results); a wrong answer fails the run. The results replace this scale's
# section of benches/RESULTS.md (between its run.sh markers).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1m}"
runs="${2:-3}"
case "$scale" in
  1m) profiles=100000 ;;
  10m) profiles=1000000 ;;
  *) echo "usage: benches/run.sh [1m|10m] [RUNS]" >&2; exit 2 ;;
esac
py="${KEYSTONE_VENV:-.venv}/bin/python"
if [ ! -x "$py" ]; then
  echo "no Python venv at ${KEYSTONE_VENV:-.venv} (DuckDB, deltalake, ADBC): ./scripts/test creates it" >&2
  exit 2
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  # One build of the three packages: built alone, a bench's package would
  # unify dependency features differently and rebuild DataFusion.
  cargo build --release -p keystone-cli -p keystone-ingest -p keystone-collect \
    --bins --bench json_floor --bench http_load --quiet
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
newest() { ls -t "$target_dir"/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
json_floor=$(newest json_floor)
http_load=$(newest http_load)
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
results="$work/results.jsonl"
: > "$results"
pid=
stop_server() { if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; pid=; fi; }
cleanup() { stop_server; if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT
. benches/lib.sh
port=$(free_port); flight_port=$(free_port)
wait_health() { wait_serving "$pid" "$port" "$work/serve.log" || exit 1; }

# record PHASE RUN KEY=VALUE... : one JSON line of results.
record() {
  python3 - "$@" >> "$results" <<'EOF'
import json, sys
phase, run, *pairs = sys.argv[1:]
row = {"phase": phase, "run": int(run)}
for p in pairs:
    k, v = p.split("=", 1)
    try:
        row[k] = float(v)
    except ValueError:
        row[k] = v
print(json.dumps(row))
EOF
}
# timed OUT COMMAND... : run, stdout to OUT; sets secs and rss_mib.
timed() {
  local out=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$out"
  read -r secs kb < "$work/time"
  rss_mib=$((kb / 1024))
}
q() { "$bin" --quiet --lake "$1" sql "$2" --format csv | tail -1; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; scale $scale ($profiles people), $runs runs; work $work"
timed /dev/null "$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
events=$(wc -l < "$work/data/events.ndjson")
store=$(($(wc -l < "$work/data/store_purchases.csv") - 1))
record gen 1 secs="$secs" rss_mib="$rss_mib" events="$events" store_rows="$store"
echo "gen: $events events + $store store rows in $secs s"

echo "== ingest (batch)"
"$json_floor" "$work/data/events.ndjson" "$runs" | while read -r line; do
  record "floor: JSON parsing" 0 secs="$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secs"])')" events="$events"
done
for r in $(seq "$runs"); do
  rm -rf "$work/lake"
  timed /dev/null "$bin" --quiet --lake "$work/lake" ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
  landed=$(q "$work/lake" "SELECT count(*) FROM events")
  if [ "$landed" != "$((events + store))" ]; then echo "WRONG: $landed events landed, $((events + store)) expected" >&2; exit 1; fi
  record "ingest (batch)" "$r" secs="$secs" rss_mib="$rss_mib" events="$((events + store))"
  echo "  run $r: $secs s, peak $rss_mib MiB"
done

echo "== ingest (HTTP)"
key=$("$bin" --quiet --lake "$work/http-lake" keys create --role collector --name bench)
"$bin" --quiet --lake "$work/http-lake" serve --http "127.0.0.1:$port" --no-flight --wal "$work/wal" 2> "$work/serve.log" &
pid=$!
wait_health
acked=0
for r in $(seq "$runs"); do
  line=$("$http_load" --url "http://127.0.0.1:$port" --key "$key" --seconds 10 --batch 100 --connections 16)
  took=$(echo "$line" | sed -E 's/.*seconds=([0-9.]+).*/\1/')
  ok=$(echo "$line" | sed -E 's/.*requests_ok=([0-9]+).*/\1/')
  acked=$((acked + 100 * ok))
  record "ingest (HTTP)" "$r" secs="$took" events="$((100 * ok))"
  echo "  run $r: $line"
done
stop_server
stored=$(q "$work/http-lake" "SELECT count(*) || '/' || count(DISTINCT message_id) FROM events")
if [ "$stored" != "$acked/$acked" ]; then echo "WRONG: acknowledged $acked, stored (rows/ids) $stored" >&2; exit 1; fi
"$http_load" --ndjson "$work/http.ndjson" --events 1000000 --batch 100 > /dev/null
"$json_floor" "$work/http.ndjson" "$runs" | while read -r line; do
  record "floor: JSON parsing (HTTP events)" 0 secs="$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secs"])')" events=1000000
done
rm -rf "$work/http-lake" "$work/wal" "$work/http.ndjson"

echo "== resolve"
printf '[identity]\ndefault_region = "FR"\n' > "$work/keystone.toml"
rm -rf "$work/base" && cp -a "$work/lake" "$work/base"
for r in $(seq "$runs"); do
  rm -rf "$work/lake" && cp -a "$work/base" "$work/lake"
  timed "$work/resolve.json" "$bin" --quiet --config "$work/keystone.toml" --lake "$work/lake" resolve --json
  read -r graph_secs profile_secs < <(python3 -c 'import json,sys; s = json.load(open(sys.argv[1]))["seconds"]; print(s["read"] + s["graph"], s["profiles"])' "$work/resolve.json")
  record "resolve" "$r" secs="$secs" rss_mib="$rss_mib" events="$((events + store))"
  record "identity graph" "$r" secs="$graph_secs" events="$((events + store))"
  record "profile build" "$r" secs="$profile_secs" events="$((events + store))"
  echo "  run $r: $secs s (profile build $profile_secs s), peak $rss_mib MiB"
done
for r in $(seq "$runs"); do
  timed "$work/peer.json" "$py" benches/label_propagation.py "$work/base"
  record "peer: label propagation (DuckDB)" "$r" secs="$secs" rss_mib="$rss_mib"
  echo "  peer run $r: $secs s"
done
rm -rf "$work/base"
profiles_n=$(q "$work/lake" "SELECT count(*) FROM profiles")
record profiles 1 profiles="$profiles_n"

echo "== segments"
k=("$bin" --quiet --lake "$work/lake")
day="TIMESTAMP '2026-11-01T00:00:00Z'"
while IFS='|' read -r name sql; do
  [ -n "$name" ] && "${k[@]}" segment create "$name" --sql "$sql"
done <<EOF
m_high_value|SELECT profile_id FROM profiles WHERE revenue >= 500
m_buyers|SELECT profile_id FROM profiles WHERE order_count > 0
m_loyal|SELECT profile_id FROM profiles WHERE order_count >= 3
m_recent|SELECT profile_id FROM profiles WHERE last_seen >= $day - INTERVAL '30 days'
m_lapsed|SELECT profile_id FROM profiles WHERE last_seen < $day - INTERVAL '90 days'
m_churn_risk|SELECT profile_id FROM profiles WHERE order_count >= 2 AND last_order_at < $day - INTERVAL '90 days'
m_rfm_champions|SELECT profile_id FROM profiles WHERE rfm_recency = 5 AND rfm_frequency >= 5 AND rfm_monetary >= 4
m_rfm_at_risk|SELECT profile_id FROM profiles WHERE rfm_recency <= 2 AND rfm_frequency >= 4
m_rfm_big_spenders|SELECT profile_id FROM profiles WHERE rfm_monetary = 5
m_one_timers|SELECT profile_id FROM profiles WHERE order_count = 1
m_browsers|SELECT profile_id FROM profiles WHERE order_count = 0 AND event_count >= 3
m_known|SELECT profile_id FROM profiles WHERE email IS NOT NULL
m_anonymous|SELECT profile_id FROM profiles WHERE email IS NULL AND user_id IS NULL
m_with_phone|SELECT profile_id FROM profiles WHERE phone IS NOT NULL
m_frequent|SELECT profile_id FROM profiles WHERE event_count >= 20
m_electronics_viewers|SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Product Viewed' AND category = 'Electronics' AND "timestamp" >= $day - INTERVAL '30 days'
m_cart_adders|SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Product Added' AND "timestamp" >= $day - INTERVAL '7 days'
m_store_buyers|SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Order Completed' AND source LIKE '%store%'
m_email_openers|SELECT DISTINCT profile_id FROM events_resolved WHERE utm_medium = 'email' AND "timestamp" >= $day - INTERVAL '60 days'
m_prospects|SELECT profile_id FROM profiles WHERE event_count >= 5 AND order_count = 0 AND email IS NOT NULL
EOF
for r in $(seq "$runs"); do
  timed /dev/null "${k[@]}" segment materialize --all
  record "segments (20)" "$r" secs="$secs" rss_mib="$rss_mib"
  echo "  run $r: $secs s, peak $rss_mib MiB"
done
members=$(q "$work/lake" "SELECT count(*) FROM segment_membership")
if [ "$members" -le 0 ]; then echo "WRONG: no segment member materialised" >&2; exit 1; fi

echo "== query suite (Keystone over Flight SQL, DuckDB, scan floor)"
admin=$("${k[@]}" keys create --role admin --name bench)
printf '[flight]\nquery_memory_limit_bytes = 8589934592\n' > "$work/queries.toml"
"$bin" --quiet --lake "$work/lake" --config "$work/queries.toml" serve --http "127.0.0.1:$port" --flight "127.0.0.1:$flight_port" --wal "$work/wal" 2> "$work/serve.log" &
pid=$!
wait_health
"$py" -W ignore benches/queries.py "$work/lake" "grpc://127.0.0.1:$flight_port" "$admin" "$runs" | tee "$work/queries.jsonl"
stop_server

"$py" benches/report.py "$scale" "$runs" "$results" "$work/queries.jsonl" benches/RESULTS.md
