#!/usr/bin/env bash
# Sustained ingest over loopback into `keystone serve` (release build):
#   benches/collector.sh [SECONDS]        (default 20 s per case)
# Cases: batches of 100 and of 1 at full speed (16 / 32 connections), then
# batches of 100 paced at half the measured full rate (latency at half load).
# The load generator (crates/keystone-collect/benches/http_load.rs) runs on the
# same 2 cores as the server. Afterwards the script checks the answer: the lake
# holds exactly the acknowledged events. Then the floor: `keystone ingest` of
# the same events as NDJSON.
#   SKIP_BUILD=1 uses the release binaries already built; KEYSTONE_BIN and
#   HTTP_LOAD name other binaries (to compare two builds on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
# One build (a bench target built alone would unify dependency features
# differently and rebuild DataFusion in release).
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p keystone-cli -p keystone-ingest -p keystone-collect \
  --bins --bench json_floor --bench http_load --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="${KEYSTONE_BIN:-$target_dir/release/keystone}"
load="${HTTP_LOAD:-$(ls -t "$target_dir"/release/deps/http_load-* | grep -v '\.d$' | head -1)}"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
. benches/lib.sh
port=$(free_port)
# $pid is /usr/bin/time; the server is its child.
stop_server() { pkill -TERM -P "$pid" 2>/dev/null || true; wait "$pid" || true; pid=; }
cleanup() {
  if [ -n "${pid:-}" ]; then stop_server; fi
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $secs s per case"
key=$("$bin" --quiet --lake "$work/lake" keys create --role collector --name bench)
/usr/bin/time -f "%e %M" -o "$work/serve.time" "$bin" --lake "$work/lake" serve --http "127.0.0.1:$port" --no-flight --wal "$work/wal" 2> "$work/serve.log" &
pid=$!
wait_serving "$pid" "$port" "$work/serve.log"

run() { "$load" --url "http://127.0.0.1:$port" --key "$key" --seconds "$secs" "$@" | tee -a "$work/cases"; }
run --batch 100 --connections 16
full=$(tail -1 "$work/cases" | sed -E 's/.*events\/s=([0-9]+).*/\1/')
run --batch 1 --connections 32
run --batch 100 --connections 16 --rate "$(python3 -c "print($full/2/100)")"

stop_server
read -r _ kb < "$work/serve.time"
echo "serve peak RSS: $((kb / 1024)) MiB"
acked=$(python3 - "$work/cases" <<'PY'
import re, sys
total = 0
for line in open(sys.argv[1]):
    b = int(re.search(r"batch=(\d+)", line).group(1))
    total += b * int(re.search(r"requests_ok=(\d+)", line).group(1))
print(total)
PY
)
stored=$("$bin" --lake "$work/lake" sql "SELECT count(*), count(DISTINCT message_id) FROM events" --format csv | tail -1)
echo "acknowledged $acked events; lake holds (rows, distinct ids) = $stored"
if [ "$stored" != "$acked,$acked" ]; then
  echo "WRONG: the lake does not hold exactly the acknowledged events" >&2
  exit 1
fi

n=2000000
"$load" --ndjson "$work/same.ndjson" --events "$n" --batch 100
/usr/bin/time -f "%e %M" -o "$work/ingest.time" "$bin" --quiet --lake "$work/floor" ingest "$work/same.ndjson"
read -r isecs ikb < "$work/ingest.time"
python3 -c "print(f'floor: keystone ingest of the same {$n:,} events as NDJSON: {$isecs} s, {$n/$isecs:,.0f} events/s, peak RSS {$ikb//1024} MiB')"
