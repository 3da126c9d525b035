#!/usr/bin/env bash
# Flight SQL throughput and latency (release build):
#   benches/flight.sh [PROFILES]     (default 1 000 000 people ≈ 10 M events)
#   SKIP_BUILD=1 uses the release binaries already built.
#   BENCH_DIR=DIR keeps (and reuses) the generated, ingested, resolved lake.
# 1. All of `events` streamed to the ADBC Flight SQL driver over loopback
#    (rows/s, MB/s of Arrow data), against the floor: the same query scanned
#    in process (crates/keystone-flight/benches/scan_floor.rs). 3 runs each.
# 2. 8 ADBC clients at once pulling segment members: p50/p99 latency.
# The answer is checked: the stream holds as many rows as `events`.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${1:-1000000}"
# One invocation for both, so features unify as in the keystone build (no rebuild).
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p keystone-cli -p keystone-flight --bins --bench scan_floor --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
floor=$(ls -t "$target_dir"/release/deps/scan_floor-* | grep -v '\.d$' | head -1)
py="${KEYSTONE_VENV:-.venv}/bin/python"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
k=("$bin" --quiet --lake "$work/lake")
. benches/lib.sh
http=$(free_port); port=$(free_port)
cleanup() {
  if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; profiles: $profiles"
if [ ! -d "$work/lake/profiles" ]; then
  "$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
  "${k[@]}" ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
  "${k[@]}" resolve
  rm -rf "$work/data"
fi
for s in "vip:revenue > 1000" "buyers:order_count > 0" "loyal:order_count >= 3" \
         "recent:last_seen > TIMESTAMP '2026-10-01T00:00:00Z'" "big_spenders:rfm_monetary = 5" \
         "at_risk:order_count >= 2 AND last_order_at < TIMESTAMP '2026-08-01T00:00:00Z'" \
         "one_timers:order_count = 1" "browsers:order_count = 0"; do
  name=${s%%:*}; cond=${s#*:}
  "${k[@]}" segment list | cut -f1 | grep -qx "$name" ||
    "${k[@]}" segment create "$name" --sql "SELECT profile_id FROM profiles WHERE $cond"
done
events=$("${k[@]}" sql "SELECT count(*) FROM events" --format csv | tail -1)
echo "events: $events"
key=$("${k[@]}" keys create --role admin --name bench)

"$bin" --quiet --lake "$work/lake" serve --http "127.0.0.1:$http" --flight "127.0.0.1:$port" --wal "$work/wal" &
pid=$!
wait_serving "$pid" "$http"
uri="grpc://127.0.0.1:$port"
sql="SELECT * FROM events"

for i in 1 2 3; do
  echo "floor (in-process scan) run $i: $("$floor" "$work/lake" "$sql")"
done
for i in 1 2 3; do
  out=$("$py" benches/flight_clients.py stream "$uri" "$key" "$sql")
  echo "ADBC stream run $i: $out"
  rows=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"])')
  if [ "$rows" != "$events" ]; then echo "WRONG: streamed $rows rows, events holds $events" >&2; exit 1; fi
done
echo "serve peak RSS after the streams: $(awk '/VmHWM/{print int($2/1024)}' /proc/$pid/status) MiB"

segs=()
for name in vip buyers loyal recent big_spenders at_risk one_timers browsers; do
  segs+=("SELECT profile_id, email, revenue FROM segments.$name")
done
echo "8 clients x 3 rounds x 8 segment pulls: $("$py" benches/flight_clients.py concurrent "$uri" "$key" 8 3 "${segs[@]}")"
for name in vip buyers browsers; do
  echo "segment $name members: $("${k[@]}" sql "SELECT count(*) FROM segments.$name" --format csv | tail -1)"
done
