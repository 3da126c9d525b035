"""Keystone's lake is plain Delta Lake: other engines read exactly what Keystone wrote.

Each test compares what an independent reader (deltalake-python, DuckDB with its
delta extension) sees with what `keystone sql` answers on the same lake.
"""

from __future__ import annotations

import json
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import KEYSTONE_TIMEOUT, Generated, generate

UTC_US = pa.timestamp("us", tz="UTC")

# The documented columns of `events` and their Arrow types.
EVENTS_SCHEMA = {
    **{
        name: pa.string()
        for name in (
            "message_id type event name anonymous_id user_id previous_id group_id "
            "source context properties traits integrations email phone currency order_id "
            "product_id category page_url page_path referrer utm_source utm_medium "
            "utm_campaign ip user_agent locale device_id"
        ).split()
    },
    "timestamp": UTC_US,
    "original_timestamp": UTC_US,
    "sent_at": UTC_US,
    "received_at": UTC_US,
    "revenue": pa.float64(),
    "event_date": pa.date32(),
}


def arrow_schema(dt: deltalake.DeltaTable) -> pa.Schema:
    return pa.schema(dt.schema().to_arrow())


def ingest_commits(dt: deltalake.DeltaTable) -> list[dict]:
    return [h for h in dt.history() if h.get("keystone.operation") == "ingest"]


def committed_shas(dt: deltalake.DeltaTable) -> set[str]:
    return {f["sha256"] for h in ingest_commits(dt) for f in h.get("keystone.files", [])}


# --------------------------------------------------------------------------
# deltalake-python on a local lake
# --------------------------------------------------------------------------


def test_deltalake_python_reads_events_with_keystone_counts(keystone, local_lake):
    dt = deltalake.DeltaTable(str(local_lake.events))

    n_keystone = keystone.count(local_lake.path)
    assert n_keystone == local_lake.ingest["events"]
    assert dt.to_pyarrow_dataset().count_rows() == n_keystone
    assert dt.to_pyarrow_table(columns=["message_id"]).num_rows == n_keystone
    assert dt.metadata().partition_columns == ["event_date"]

    # Per source (NDJSON file vs CSV file) the reader agrees with Keystone too.
    counts = pc.value_counts(dt.to_pyarrow_table(columns=["source"]).column("source"))
    ours = {c["values"]: c["counts"] for c in counts.to_pylist()}
    theirs = {
        r["source"]: int(r["n"])
        for r in keystone.sql(
            local_lake.path, "SELECT source, count(*) AS n FROM events GROUP BY source"
        )
    }
    assert ours == theirs
    assert set(ours) == {"events", "store_purchases"}


def test_events_schema_has_the_documented_columns_and_arrow_types(local_lake):
    schema = arrow_schema(deltalake.DeltaTable(str(local_lake.events)))
    got = {f.name: f.type for f in schema}
    assert set(got) == set(EVENTS_SCHEMA), (
        f"missing: {sorted(set(EVENTS_SCHEMA) - set(got))}, "
        f"unexpected: {sorted(set(got) - set(EVENTS_SCHEMA))}"
    )
    wrong = {n: str(got[n]) for n, t in EVENTS_SCHEMA.items() if got[n] != t}
    assert not wrong, f"columns with unexpected Arrow types: {wrong}"


def test_history_has_one_keystone_ingest_commit_per_ingest(local_lake):
    dt = deltalake.DeltaTable(str(local_lake.events))
    history = dt.history()
    ops = sorted(h["operation"] for h in history)
    assert ops == ["CREATE TABLE", "WRITE"], history

    (commit,) = ingest_commits(dt)
    assert commit["version"] == local_lake.ingest["events_version"] == dt.version()
    files = {f["source"]: f for f in commit["keystone.files"]}
    reported = {f["source"]: f for f in local_lake.ingest["files"]}
    assert set(files) == set(reported) == {"events", "store_purchases"}
    for source, f in files.items():
        assert f["sha256"] == reported[source]["sha256"]
        assert f["events"] == reported[source]["events"]
    assert sum(f["events"] for f in files.values()) == local_lake.ingest["events"]


# --------------------------------------------------------------------------
# DuckDB
# --------------------------------------------------------------------------


def test_duckdb_reads_the_same_rows(keystone, local_lake, duckdb_delta):
    scan = f"delta_scan('{local_lake.events}')"

    (n,) = duckdb_delta.sql(f"SELECT count(*) FROM {scan}").fetchone()
    assert n == keystone.count(local_lake.path)

    ours = dict(duckdb_delta.sql(f"SELECT type, count(*) FROM {scan} GROUP BY type").fetchall())
    theirs = {
        r["type"]: int(r["n"])
        for r in keystone.sql(local_lake.path, "SELECT type, count(*) AS n FROM events GROUP BY type")
    }
    assert ours == theirs
    assert set(ours) == {"identify", "track", "page", "screen", "group", "alias"}

    (revenue,) = duckdb_delta.sql(f"SELECT round(sum(revenue), 2) FROM {scan}").fetchone()
    (row,) = keystone.sql(local_lake.path, "SELECT round(sum(revenue), 2) AS r FROM events")
    assert revenue > 0
    assert revenue == pytest.approx(float(row["r"]), abs=0.005)

    # The data files the log lists are plain Parquet: read without the Delta
    # extension (partition value from the hive-style path) they hold the same rows.
    uris = deltalake.DeltaTable(str(local_lake.events)).file_uris()
    (n_parquet,) = duckdb_delta.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [uris]
    ).fetchone()
    assert n_parquet == n


def test_every_reader_sees_event_date_as_the_utc_day_of_timestamp(keystone, local_lake, duckdb_delta):
    scan = f"delta_scan('{local_lake.events}')"
    bad = duckdb_delta.sql(
        f"SELECT count(*) FROM {scan} WHERE event_date IS DISTINCT FROM CAST(timestamp AS DATE)"
    ).fetchone()[0]
    assert bad == 0
    (row,) = keystone.sql(
        local_lake.path,
        "SELECT count(*) AS n FROM events WHERE event_date IS DISTINCT FROM CAST(timestamp AS DATE)",
    )
    assert int(row["n"]) == 0
    # Emails are stored lower-cased, whoever reads them.
    upper = duckdb_delta.sql(f"SELECT count(*) FROM {scan} WHERE email <> lower(email)").fetchone()[0]
    assert upper == 0


# --------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------

QUARANTINE_LINES = [
    # 1: good
    '{"type":"track","messageId":"m-1","timestamp":"2026-10-01T10:00:00Z","userId":"u1",'
    '"event":"Order Completed","properties":{"revenue":12.5,"currency":"EUR","order_id":"o1"}}',
    # 2: invalid JSON
    '{"type":"track","messageId":"m-2", "timestamp": not json',
    # 3: unknown type
    '{"type":"teleport","messageId":"m-3","timestamp":"2026-10-01T10:02:00Z","userId":"u3"}',
    # 4: neither userId nor anonymousId
    '{"type":"page","messageId":"m-4","timestamp":"2026-10-01T10:03:00Z","name":"Home"}',
    # 5: good
    '{"type":"identify","messageId":"m-5","timestamp":"2026-10-02T10:00:00Z","userId":"u5",'
    '"traits":{"email":"Ann@Example.COM"}}',
]


def test_quarantine_is_readable_by_deltalake(keystone, tmp_path):
    src = tmp_path / "mixed.ndjson"
    src.write_text("\n".join(QUARANTINE_LINES) + "\n")
    lake = tmp_path / "lake"

    report = keystone.ingest(lake, src)
    assert (report["events"], report["quarantined"]) == (2, 3), report

    events = deltalake.DeltaTable(str(lake / "events"))
    assert sorted(events.to_pyarrow_table(columns=["message_id"]).column(0).to_pylist()) == [
        "m-1",
        "m-5",
    ]

    q = deltalake.DeltaTable(str(lake / "quarantine"))
    assert q.metadata().partition_columns == ["event_date"]
    rows = sorted(q.to_pyarrow_table().to_pylist(), key=lambda r: r["line"])
    assert [r["line"] for r in rows] == [2, 3, 4]
    assert keystone.count(lake, "quarantine") == 3

    by_line = {r["line"]: r for r in rows}
    for line, r in by_line.items():
        assert r["raw"] == QUARANTINE_LINES[line - 1]
        assert Path(r["file"]).name == "mixed.ndjson"
        assert r["source"] == "mixed"
        assert f"line {line}" in r["reason"]
    assert "invalid JSON" in by_line[2]["reason"]
    assert "teleport" in by_line[3]["reason"] and "type" in by_line[3]["reason"]
    assert "userId" in by_line[4]["reason"] and "anonymousId" in by_line[4]["reason"]


# --------------------------------------------------------------------------
# S3 (moto)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated_pair(keystone, tmp_path_factory) -> tuple[Generated, Generated]:
    """Two small workloads with different seeds, for the concurrent loads."""
    root = tmp_path_factory.mktemp("gen-pair")
    return (
        generate(keystone, root / "seed11", profiles=150, seed=11),
        generate(keystone, root / "seed12", profiles=150, seed=12),
    )


def run_concurrently(keystone, lake: str, env: dict, files: list[Path]) -> list[tuple[int, dict | None, str]]:
    procs = [keystone.popen("ingest", f, "--json", lake=lake, env=env) for f in files]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=KEYSTONE_TIMEOUT)
            results.append((p.returncode, json.loads(out) if p.returncode == 0 else None, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    return results


def events_in(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_lake_on_s3_is_readable_by_deltalake_python(keystone, moto, generated):
    lake = moto.url("lake")
    report = keystone.ingest(lake, generated.events, generated.store_purchases, env=moto.env())
    assert report["events"] > 0

    dt = deltalake.DeltaTable(f"{lake}/events", storage_options=moto.storage_options)
    n_keystone = keystone.count(lake, env=moto.env())
    assert n_keystone == report["events"]
    assert dt.to_pyarrow_dataset().count_rows() == n_keystone
    assert dt.metadata().partition_columns == ["event_date"]
    assert arrow_schema(dt).field("timestamp").type == UTC_US
    assert committed_shas(dt) == {f["sha256"] for f in report["files"]}


def _assert_concurrent_loads_kept_everything(keystone, moto, lake, files, results, base=0, note=""):
    for f, (rc, _, err) in zip(files, results):
        assert rc == 0, f"concurrent `keystone ingest {f}` exited {rc}: {err.strip()}{note}"
    loaded = [r["events"] for _, r, _ in results]
    # Every line of both generated files is a valid event: nothing quarantined, nothing lost.
    assert loaded == [events_in(f) for f in files]
    assert keystone.count(lake, env=moto.env()) == base + sum(loaded)

    dt = deltalake.DeltaTable(f"{lake}/events", storage_options=moto.storage_options)
    assert dt.to_pyarrow_dataset().count_rows() == base + sum(loaded)
    shas = {f["sha256"] for _, r, _ in results for f in r["files"]}
    assert shas <= committed_shas(dt), "an ingest commit is missing from the Delta history"
    ops = [h["operation"] for h in dt.history()]
    assert ops.count("CREATE TABLE") == 1, f"history (newest first): {ops}{note}"


def test_concurrent_ingests_into_an_existing_s3_lake_lose_nothing(keystone, moto, generated, generated_pair):
    lake = moto.url("concurrent-existing")
    env = moto.env()
    base = keystone.ingest(lake, generated.store_purchases, env=env)["events"]
    assert base > 0

    files = [g.events for g in generated_pair]
    results = run_concurrently(keystone, lake, env, files)
    _assert_concurrent_loads_kept_everything(keystone, moto, lake, files, results, base=base)


def test_concurrent_first_ingests_into_a_fresh_s3_lake_lose_nothing(
    keystone, moto, generated_pair, create_barrier_proxy
):
    # Both processes go through a proxy that holds their CREATE TABLE commit until
    # both have tried it, so the race happens on every run rather than by chance.
    lake = moto.url("concurrent-fresh")
    files = [g.events for g in generated_pair]
    results = run_concurrently(keystone, lake, moto.env(create_barrier_proxy.endpoint), files)
    note = f" (both CREATE TABLE commits held until they collided: {create_barrier_proxy.met})"
    _assert_concurrent_loads_kept_everything(keystone, moto, lake, files, results, note=note)


# --------------------------------------------------------------------------
# Identity resolution output: plain Delta tables too
# --------------------------------------------------------------------------


def test_resolved_identities_and_profiles_read_the_same_everywhere(
    keystone, generated, tmp_path, duckdb_delta
):
    lake = tmp_path / "lake"
    keystone.ingest(lake, generated.events, generated.store_purchases)
    report = json.loads(keystone("resolve", "--json", lake=lake).stdout)
    assert report["mode"] == "full" and report["profiles"] > 0, report

    identities = deltalake.DeltaTable(str(lake / "identities")).to_pyarrow_table()
    assert identities.num_rows == report["identifiers"]
    assert set(identities.column_names) >= {
        "identifier_type", "identifier", "profile_id", "first_seen", "last_seen", "linked_by"
    }
    # The watermark is a Delta application transaction any reader can see.
    history = deltalake.DeltaTable(str(lake / "identities")).history(1)[0]
    assert history.get("events_version") == report["events_version"], history

    scan = f"delta_scan('{lake / 'profiles'}')"
    (n, buyers, revenue) = duckdb_delta.sql(
        f"SELECT count(*), count(*) FILTER (WHERE order_count > 0), round(sum(revenue), 2) FROM {scan}"
    ).fetchone()
    (row,) = keystone.sql(
        lake,
        "SELECT count(*) AS n, count(*) FILTER (WHERE order_count > 0) AS b, "
        "round(sum(revenue), 2) AS r FROM profiles",
    )
    assert n == report["profiles"] == int(row["n"])
    assert buyers == int(row["b"]) > 0
    assert revenue == pytest.approx(float(row["r"]), abs=0.005)
    # Every profile's events add up to every resolved event.
    (events,) = duckdb_delta.sql(f"SELECT sum(event_count) FROM {scan}").fetchone()
    (resolved,) = keystone.sql(
        lake, "SELECT count(profile_id) AS n FROM events_resolved"
    )
    assert events == int(resolved["n"])
