#!/usr/bin/env bash
# End-to-end benchmark of `keystone gen` and `keystone ingest` on generated data.
#   benches/ingest.sh [PROFILES]     (default 1000000 ≈ 10 M events)
# Uses the release binary (builds it if needed). Prints wall time, peak RSS and
# rates for each phase, and checks the answer: the events table must hold every
# valid line of the generated files (no quarantine on clean data).
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${1:-1000000}"
cargo build --release -p keystone-cli --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$work"' EXIT

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
  read -r secs kb < "$work/time"
  printf '%-28s %8.1f s   peak RSS %6.0f MiB\n' "$label" "$secs" "$((kb / 1024))"
  echo "$secs"  > "$work/last_secs"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; profiles: $profiles"
measure "gen" "$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
events=$(wc -l < "$work/data/events.ndjson")
bytes=$(stat -c %s "$work/data/events.ndjson")
gen_secs=$(cat "$work/last_secs")
echo "  $events events, $((bytes / 1048576)) MiB of NDJSON ($(python3 -c "print(f'{$events/$gen_secs:,.0f}')") events/s)"

measure "ingest (NDJSON + CSV)" "$bin" --quiet --lake "$work/lake" ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
secs=$(cat "$work/last_secs")
echo "  $(python3 -c "print(f'{$events/$secs:,.0f} events/s, {$bytes/$secs/1048576:,.1f} MiB/s of NDJSON')")"

stored=$("$bin" --lake "$work/lake" sql "SELECT count(*) FROM events WHERE source = 'events'" --format csv | tail -1)
if [ "$stored" != "$events" ]; then
  echo "WRONG: events table has $stored rows from events.ndjson, the file has $events lines" >&2
  exit 1
fi
echo "  check: events table holds all $stored lines"
measure "query: count per type" "$bin" --lake "$work/lake" sql "SELECT type, count(*) FROM events GROUP BY type" --format csv
measure "query: revenue per day" "$bin" --lake "$work/lake" sql "SELECT event_date, sum(revenue) FROM events WHERE event = 'Order Completed' GROUP BY 1" --format csv
echo "lake size: $(du -sh "$work/lake" | cut -f1)"
