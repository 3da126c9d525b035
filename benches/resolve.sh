#!/usr/bin/env bash
# Benchmark of `keystone resolve` (identity graph + profile build) on generated data.
#   benches/resolve.sh [PROFILES]     (default 1000000 ≈ 10 M events; 100000 ≈ 1 M)
# Phases: full resolve; a re-run with nothing new; an incremental run after 1 %
# more events (new days of data); and the peer approach (label propagation in
# DuckDB SQL, benches/label_propagation.py) on the same events. Prints wall
# time and peak RSS of each, and the resolve report (JSON) of Keystone's runs.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${1:-1000000}"
cargo build --release -p keystone-cli --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$work"' EXIT
venv="${KEYSTONE_VENV:-.venv}"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out"
  read -r secs kb < "$work/time"
  printf '%-34s %8.1f s   peak RSS %6.0f MiB\n' "$label" "$secs" "$((kb / 1024))"
  [ -s "$work/out" ] && sed 's/^/    /' "$work/out"
  return 0
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; profiles: $profiles"
"$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
"$bin" --quiet gen --profiles "$((profiles / 100))" --seed 7 --days 7 --end 2026-11-08 --out "$work/new"
echo "events: $(wc -l < "$work/data/events.ndjson") (+ $(wc -l < "$work/data/store_purchases.csv") store rows); new: $(wc -l < "$work/new/events.ndjson")"
"$bin" --quiet --lake "$work/lake" ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
printf '[identity]\ndefault_region = "FR"\n' > "$work/keystone.toml"
k=("$bin" --quiet --config "$work/keystone.toml" --lake "$work/lake")

measure "resolve (full)" "${k[@]}" resolve --json
measure "resolve (nothing new)" "${k[@]}" resolve --json
if [ -x "$venv/bin/python" ]; then
  measure "peer: label propagation (DuckDB)" "$venv/bin/python" benches/label_propagation.py "$work/lake"
else
  echo "peer: skipped (no Python venv at $venv: run ./scripts/test once to create it)"
fi
"$bin" --quiet --lake "$work/lake" ingest "$work/new/events.ndjson" "$work/new/store_purchases.csv"
measure "resolve (incremental, +1 %)" "${k[@]}" resolve --json
"${k[@]}" sql "SELECT count(*) AS profiles, sum(event_count) AS events, count(*) FILTER (WHERE order_count > 0) AS buyers FROM profiles" --format csv
