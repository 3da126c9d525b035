#!/usr/bin/env bash
# Compaction of the small files streaming ingestion leaves (release build):
#   benches/compaction.sh [LOADS] [PROFILES]   (default 50 loads, 20 000 people)
#   SKIP_BUILD=1 uses the release binary already built.
# `keystone gen` data (PROFILES people over 200 days) is dealt round-robin
# into LOADS NDJSON files; each `keystone ingest` then writes one small file
# per day partition, as a collector's flush every second does: 50 loads ×
# 200 days ≈ 10 000 files. `keystone maintain` is timed whole (retention,
# compaction to 128 MB per partition, checkpoint, vacuum) and the answer is
# checked: the same rows (count, distinct message ids, revenue) before and
# after, and the file count of the table's current version.
set -euo pipefail
cd "$(dirname "$0")/.."
loads="${1:-50}"
profiles="${2:-20000}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p keystone-cli --bins --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/keystone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
k=("$bin" --quiet --lake "$work/lake")
q() { "${k[@]}" sql "$1" --format csv | tail -1; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; loads: $loads, profiles: $profiles"
"$bin" --quiet gen --profiles "$profiles" --days 200 --out "$work/data" --end 2026-11-01
mkdir "$work/loads"
split -n "r/$loads" -d -a 4 "$work/data/events.ndjson" "$work/loads/part-"
start=$(date +%s.%N)
for f in "$work"/loads/part-*; do
  mv "$f" "$f.ndjson"
  "${k[@]}" ingest "$f.ndjson"
done
end=$(date +%s.%N)
echo "$loads loads in $(python3 -c "print(round($end - $start, 1))") s"

# The table's current files: the add actions of its latest snapshot, as
# `maintain` reports them (files_before), and the Parquet files on disk.
check="SELECT count(*), count(DISTINCT message_id), round(sum(revenue), 2) FROM events"
before=$(q "$check")
on_disk=$(find "$work/lake/events" -name '*.parquet' | wc -l)
echo "before: rows, distinct ids, revenue = $before; parquet files on disk: $on_disk"

start=$(date +%s.%N)
/usr/bin/time -f "peak RSS %M KiB" "${k[@]}" maintain --json > "$work/maintain.json" 2> "$work/maintain.time"
end=$(date +%s.%N)
after=$(q "$check")
python3 - "$work/maintain.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for t in r["tables"]:
    if t["table"] == "events":
        print(f"events: {t['files_before']} files -> {t['files_after']} files "
              f"in {t['seconds']:.1f} s ({t['files_vacuumed']} vacuumed; "
              f"removed files are kept {168} h for readers of older versions)")
EOF
echo "maintain (all tables): $(python3 -c "print(round($end - $start, 1))") s wall, $(tail -1 "$work/maintain.time")"
echo "after: rows, distinct ids, revenue = $after"
if [ "$before" != "$after" ]; then
  echo "WRONG: the rows changed ($before -> $after)" >&2
  exit 1
fi
