#!/usr/bin/env bash
# Erasure on a large lake (release build):
#   benches/forget.sh [PROFILES]   (default 1 000 000 people ≈ 10 M events)
#   SKIP_BUILD=1 uses the release binary already built.
#   BENCH_DIR=DIR keeps (and reuses) the generated, ingested, resolved lake
#   (the layout of benches/flight.sh); the erasures change it.
# `keystone forget` of 1 person, then of 1 000 people (one --file), timed
# whole (lookup, deletes, zero-retention vacuum, checkpoint, log cleanup,
# suppression, audit). The answer is checked: the events table loses
# at least the events resolved to those people (also any other event carrying
# one of their identifiers), and no identity of theirs is left.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${1:-1000000}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p keystone-cli --bins --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
k=("$bin" --quiet --lake "$work/lake")
cleanup() { if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; profiles: $profiles"
if [ ! -d "$work/lake/profiles" ]; then
  "$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
  "${k[@]}" ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
  "${k[@]}" resolve
  rm -rf "$work/data"
fi
q() { "${k[@]}" sql "$1" --format csv | tail -1; }
"${k[@]}" resolve >/dev/null
echo "events: $(q "SELECT count(*) FROM events"), data files: $(find "$work/lake/events" -name '*.parquet' | wc -l)"

# People with an e-mail, picked by profile id (deterministic).
"${k[@]}" sql "SELECT 'email:' || email FROM profiles WHERE email IS NOT NULL ORDER BY profile_id LIMIT 1001" --format csv | tail -n +2 > "$work/people.txt"
one=$(head -1 "$work/people.txt")
tail -n +2 "$work/people.txt" > "$work/thousand.txt"

for case in one thousand; do
  if [ "$case" = one ]; then
    email=${one#email:}
    cond="profile_id IN (SELECT profile_id FROM identities WHERE identifier_type = 'email' AND identifier = '$email')"
    args=("$one")
  else
    list=$(sed "s/^email:/'/; s/\$/'/" "$work/thousand.txt" | paste -sd, -)
    cond="profile_id IN (SELECT profile_id FROM identities WHERE identifier_type = 'email' AND identifier IN ($list))"
    args=(--file "$work/thousand.txt")
  fi
  before=$(q "SELECT count(*) FROM events")
  theirs=$(q "SELECT count(*) FROM events_resolved WHERE $cond")
  people=$(q "SELECT count(DISTINCT profile_id) FROM identities WHERE $cond")
  start=$(date +%s.%N)
  /usr/bin/time -f "peak RSS %M KiB" "${k[@]}" forget "${args[@]}" --json > "$work/forget-$case.json" 2> "$work/forget-$case.time"
  end=$(date +%s.%N)
  after=$(q "SELECT count(*) FROM events")
  left=$(q "SELECT count(*) FROM identities WHERE $cond")
  echo "forget $case ($people profile(s), $theirs events): $(python3 -c "print(round($end - $start, 2))") s wall, $(tail -1 "$work/forget-$case.time"); events $before -> $after"
  python3 -c "import json; r=json.load(open('$work/forget-$case.json')); print('  removed', r['removed'], 'files deleted', r['files_deleted'])"
  # Events resolved to them all go; events resolved elsewhere that carry
  # one of their identifiers (a shared device, say) go too.
  if [ $((before - after)) -lt "$theirs" ] || [ "$left" != 0 ]; then
    echo "WRONG: removed $((before - after)) events, $theirs resolved to them; $left identities left" >&2; exit 1
  fi
done
echo "data files after: $(find "$work/lake/events" -name '*.parquet' | wc -l)"
