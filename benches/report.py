"""Write the results of benches/run.sh into benches/RESULTS.md.

  report.py SCALE RUNS RESULTS.jsonl QUERIES.jsonl RESULTS.md

Replaces the section between `<!-- run.sh SCALE begin -->` and
`<!-- run.sh SCALE end -->` (appends it the first time) and prints it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone


def versions() -> str:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    lock = open("Cargo.lock").read()

    def crate(name: str) -> str:
        m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', lock)
        return m.group(1) if m else "?"

    import deltalake
    import duckdb
    import pyarrow

    return (
        f"keystone {run('git', 'rev-parse', '--short', 'HEAD')}, {run('rustc', '--version')}, "
        f"datafusion {crate('datafusion')}, arrow {crate('arrow')}, deltalake (Rust) {crate('deltalake-core')}; "
        f"DuckDB {duckdb.__version__}, deltalake-python {deltalake.__version__}, pyarrow {pyarrow.__version__}, "
        f"Python {platform.python_version()}"
    )


def machine() -> str:
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({model}), {mem_kib / 1048576:.0f} GiB"


def spread(xs: list[float], unit: str = "s", digits: int = 1) -> tuple[str, str]:
    med = statistics.median(xs)
    return f"{med:.{digits}f} {unit}", f"{min(xs):.{digits}f}–{max(xs):.{digits}f}"


def main() -> None:
    scale, runs, results_path, queries_path, out_path = sys.argv[1:6]
    rows = [json.loads(line) for line in open(results_path) if line.strip()]
    by_phase: dict[str, list[dict]] = {}
    for r in rows:
        by_phase.setdefault(r["phase"], []).append(r)

    def secs(phase: str) -> list[float]:
        return [r["secs"] for r in by_phase.get(phase, [])]

    def rate(phase: str) -> float:
        rs = by_phase[phase]
        return statistics.median(r["events"] / r["secs"] for r in rs)

    gen = by_phase["gen"][0]
    profiles = int(by_phase["profiles"][0]["profiles"])
    lines = []
    lines.append(f"<!-- run.sh {scale} begin -->")
    lines.append(f"## One-command benchmark, scale {scale} (`benches/run.sh {scale} {runs}`)")
    lines.append("")
    lines.append(
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d')} on {machine()}; {versions()}. "
        f"Data: `keystone gen` — {int(gen['events']):,} events + {int(gen['store_rows']):,} store rows, "
        f"{profiles:,} profiles after resolve. Median of {runs} runs and the min–max spread; "
        "everything (server, load generator, DuckDB) on the same cores."
    )
    lines.append("")
    lines.append("| phase | median | min–max | events/s | peak RSS | floor or peer | its median | Keystone ÷ floor, or peer ÷ Keystone |")
    lines.append("|---|---|---|---|---|---|---|---|")
    flagged = []

    def rss(phase: str) -> str:
        vals = [r["rss_mib"] for r in by_phase.get(phase, []) if "rss_mib" in r]
        return f"{max(vals):.0f} MiB" if vals else "—"

    def phase_row(phase: str, floor: str | None, kind: str) -> None:
        xs = secs(phase)
        if not xs:
            return
        med, mm = spread(xs)
        eps = f"{rate(phase):,.0f}" if "events" in by_phase[phase][0] else "—"
        if floor and floor in by_phase:
            fmed, _ = spread(secs(floor), digits=2)
            if kind == "floor":
                ratio = rate(floor) / rate(phase)
                cell = f"{ratio:.1f}×"
                if ratio > 2:
                    flagged.append((phase, ratio))
            else:
                ratio = statistics.median(secs(floor)) / statistics.median(xs)
                cell = f"peer {ratio:.1f}× slower" if ratio >= 1 else f"peer faster: Keystone {1 / ratio:.1f}×"
            lines.append(f"| {phase} | {med} | {mm} | {eps} | {rss(phase)} | {floor} | {fmed} | {cell} |")
        else:
            lines.append(f"| {phase} | {med} | {mm} | {eps} | {rss(phase)} | no floor defined | — | — |")

    phase_row("ingest (batch)", "floor: JSON parsing", "floor")
    phase_row("ingest (HTTP)", "floor: JSON parsing (HTTP events)", "floor")
    phase_row("resolve", None, "")
    phase_row("identity graph", "peer: label propagation (DuckDB)", "peer")
    phase_row("profile build", None, "")
    phase_row("segments (20)", None, "")
    lines.append("")
    lines.append(
        "Ingest floors compare rates (events/s): the floor parses the same events' JSON on all cores "
        "and builds nothing (`crates/keystone-ingest/benches/json_floor.rs`). HTTP events come from the "
        "load generator (`http_load`), so its floor parses those. The identity graph (reading the "
        "identifiers of every event and linking them, the `read` and `graph` seconds of resolve's report) is "
        "compared with its peer, label propagation to a fixed point in DuckDB SQL "
        "(`benches/label_propagation.py`, edges read from the same lake); resolve as a whole adds the profile "
        "build and the commits."
    )
    lines.append("")

    queries = [json.loads(line) for line in open(queries_path) if line.strip()]
    per_query = [q for q in queries if "name" in q]
    summary = next(q for q in queries if "geomean_ratio_keystone_over_duckdb" in q)
    lines.append("| query | Keystone (Flight SQL) | DuckDB | scan floor | Keystone ÷ DuckDB | Keystone ÷ floor | same answer |")
    lines.append("|---|---|---|---|---|---|---|")
    for q in per_query:
        k, kmm = spread(q["keystone_ms"], "ms", 0)
        d, dmm = spread(q["duckdb_ms"], "ms", 0)
        f, fmm = spread(q["floor_ms"], "ms", 0)
        lines.append(
            f"| {q['name']} | {k} ({kmm}) | {d} ({dmm}) | {f} ({fmm}) | {q['ratio']:.2f} | "
            f"{q['keystone_over_floor']:.1f} | {'yes' if q['same_answer'] else 'NO'} |"
        )
        if q["keystone_over_floor"] > 2:
            flagged.append((f"query: {q['name']}", q["keystone_over_floor"]))
    lines.append("")
    lines.append(
        f"Geometric mean Keystone ÷ DuckDB: **{summary['geomean_ratio_keystone_over_duckdb']:.2f}** "
        f"(target ≤ 1.0); Keystone ÷ scan floor: {summary['geomean_ratio_keystone_over_floor']:.2f}. "
        "The scan floor reads the stored columns each query reads (`READS` in `benches/queries.py`) "
        "with pyarrow on all cores; Keystone's time includes the Flight SQL round trip "
        f"(`SELECT 1` over the same connection: {summary['round_trip_ms']:.0f} ms median)."
    )
    lines.append("")
    if flagged:
        lines.append(
            "Above 2× their floor: "
            + "; ".join(f"{name} ({ratio:.1f}×)" for name, ratio in flagged)
            + ". Where the time goes is in the sections below (ingest, collector, query suite)."
        )
    else:
        lines.append("No phase is above 2× its floor.")
    lines.append(f"<!-- run.sh {scale} end -->")
    section = "\n".join(lines) + "\n"

    text = open(out_path).read() if os.path.exists(out_path) else "# Benchmark results\n"
    begin, end = f"<!-- run.sh {scale} begin -->", f"<!-- run.sh {scale} end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(out_path, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
