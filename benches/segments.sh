#!/usr/bin/env bash
# Segment materialisation (release build):
#   benches/segments.sh [PROFILES]   (default 1 000 000 people ≈ 10 M events)
#   SKIP_BUILD=1 uses the release binaries already built.
#   BENCH_DIR=DIR keeps (and reuses) the generated, ingested, resolved lake
#   (the same layout as benches/flight.sh, which it can share).
# 20 segments — profile filters, RFM cells, event-level audiences over
# events_resolved — materialised 3 times: run 1 (everyone enters), then two
# runs after their definitions moved (entered/exited computed against the
# previous snapshot). Per-segment evaluate and changes times come from the
# command's own report. The answer is checked: each segment's snapshot holds
# as many rows as its live view.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${1:-1000000}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p keystone-cli -p keystone-flight --bins --bench scan_floor --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
k=("$bin" --lake "$work/lake")
cleanup() { if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; profiles: $profiles"
if [ ! -d "$work/lake/profiles" ]; then
  "$bin" --quiet gen --profiles "$profiles" --out "$work/data" --end 2026-11-01
  "${k[@]}" --quiet ingest "$work/data/events.ndjson" "$work/data/store_purchases.csv"
  "${k[@]}" --quiet resolve
  rm -rf "$work/data"
fi
echo "events: $("${k[@]}" --quiet sql "SELECT count(*) FROM events" --format csv | tail -1)"
echo "profiles: $("${k[@]}" --quiet sql "SELECT count(*) FROM profiles" --format csv | tail -1)"

define() { # round
  local r=$1 i=0
  for name in $("${k[@]}" --quiet segment list | tail -n +2 | cut -f1 | grep '^m_' || true); do
    "${k[@]}" --quiet segment drop "$name"
  done
  local rev=$((500 + 100 * r)) days=$((30 + 5 * r))
  local defs=(
    "m_high_value:SELECT profile_id FROM profiles WHERE revenue >= $rev"
    "m_buyers:SELECT profile_id FROM profiles WHERE order_count > $((r > 0 ? 1 : 0))"
    "m_loyal:SELECT profile_id FROM profiles WHERE order_count >= $((3 + r))"
    "m_recent:SELECT profile_id FROM profiles WHERE last_seen >= TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$days days'"
    "m_lapsed:SELECT profile_id FROM profiles WHERE last_seen < TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$((90 + r * 10)) days'"
    "m_churn_risk:SELECT profile_id FROM profiles WHERE order_count >= 2 AND last_order_at < TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$((90 - r * 10)) days'"
    "m_rfm_champions:SELECT profile_id FROM profiles WHERE rfm_recency = 5 AND rfm_frequency >= $((5 - r)) AND rfm_monetary >= 4"
    "m_rfm_at_risk:SELECT profile_id FROM profiles WHERE rfm_recency <= 2 AND rfm_frequency >= $((4 - r))"
    "m_rfm_big_spenders:SELECT profile_id FROM profiles WHERE rfm_monetary = 5"
    "m_one_timers:SELECT profile_id FROM profiles WHERE order_count = 1"
    "m_browsers:SELECT profile_id FROM profiles WHERE order_count = 0 AND event_count >= $((3 + r))"
    "m_known:SELECT profile_id FROM profiles WHERE email IS NOT NULL"
    "m_anonymous:SELECT profile_id FROM profiles WHERE email IS NULL AND user_id IS NULL"
    "m_with_phone:SELECT profile_id FROM profiles WHERE phone IS NOT NULL"
    "m_frequent:SELECT profile_id FROM profiles WHERE event_count >= $((20 + 5 * r))"
    "m_electronics_viewers:SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Product Viewed' AND category = 'Electronics' AND \"timestamp\" >= TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$days days'"
    "m_cart_adders:SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Product Added' AND \"timestamp\" >= TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$((7 + r)) days'"
    "m_store_buyers:SELECT DISTINCT profile_id FROM events_resolved WHERE event = 'Order Completed' AND source LIKE '%store%'"
    "m_email_openers:SELECT DISTINCT profile_id FROM events_resolved WHERE utm_medium = 'email' AND \"timestamp\" >= TIMESTAMP '2026-11-01T00:00:00Z' - INTERVAL '$((60 + r * 10)) days'"
    "m_prospects:SELECT profile_id FROM profiles WHERE event_count >= $((5 + r)) AND order_count = 0 AND email IS NOT NULL"
  )
  for d in "${defs[@]}"; do
    "${k[@]}" --quiet segment create "${d%%:*}" --sql "${d#*:}"
    i=$((i + 1))
  done
}

names=()
for r in 0 1 2; do
  define "$r"
  [ ${#names[@]} -gt 0 ] || mapfile -t names < <("${k[@]}" --quiet segment list | tail -n +2 | cut -f1 | grep '^m_')
  start=$(date +%s.%N)
  /usr/bin/time -f "peak RSS %M KiB" "${k[@]}" segment materialize "${names[@]}" 2>&1 | sed "s/^/round $r: /"
  end=$(date +%s.%N)
  echo "round $r: 20 segments materialised in $(python3 -c "print(round($end - $start, 2))") s (wall, whole command)"
done
run=$("${k[@]}" --quiet sql "SELECT max(run_id) FROM segment_membership" --format csv | tail -1)
for name in "${names[@]}"; do
  live=$("${k[@]}" --quiet sql "SELECT count(*) FROM segments.$name" --format csv | tail -1)
  snap=$("${k[@]}" --quiet sql "SELECT count(*) FROM segment_membership WHERE segment = '$name' AND run_id = $run" --format csv | tail -1)
  if [ "$live" != "$snap" ]; then echo "WRONG: $name live $live, snapshot $snap" >&2; exit 1; fi
done
echo "checked: every snapshot of run $run equals its live view"
