"""Segment snapshots and exports as activation tools and readers see them:
exported Parquet/CSV read by pyarrow and DuckDB (local and on S3), hashed
identifiers checked with hashlib, and the segment_membership /
segment_changes Delta tables read by deltalake-python."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import deltalake
import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def resolved_lake(keystone, local_lake, tmp_path_factory):
    """A copy of the shared local lake, resolved, with two segments."""
    path = tmp_path_factory.mktemp("segments") / "lake"
    shutil.copytree(local_lake.path, path)
    keystone("resolve", lake=path)
    keystone("segment", "create", "buyers", "--sql",
             "SELECT profile_id, revenue, order_count FROM profiles WHERE order_count > 0", lake=path)
    keystone("segment", "create", "known", "--sql",
             "SELECT profile_id FROM profiles WHERE email IS NOT NULL", lake=path)
    return path


def test_materialized_tables_are_delta_tables_deltalake_reads(keystone, resolved_lake):
    run = keystone("segment", "materialize", "--all", lake=resolved_lake).stdout.strip()
    members = deltalake.DeltaTable(str(resolved_lake / "segment_membership")).to_pyarrow_table()
    buyers = int(keystone.sql(resolved_lake, "SELECT count(*) AS n FROM segments.buyers")[0]["n"])
    assert buyers > 0
    of_run = members.filter(members["run_id"].to_numpy() == int(run))
    assert sum(1 for s in of_run["segment"].to_pylist() if s == "buyers") == buyers
    changes = deltalake.DeltaTable(str(resolved_lake / "segment_changes")).to_pyarrow_table()
    assert set(changes["change"].to_pylist()) == {"entered"}
    assert changes.num_rows == of_run.num_rows


def test_parquet_export_has_identifiers_and_the_definition_columns(keystone, resolved_lake, tmp_path):
    out = tmp_path / "buyers.parquet"
    keystone("segment", "export", "buyers", "--to", out, lake=resolved_lake)
    table = pq.read_table(out)
    assert table.column_names == ["profile_id", "email", "phone", "revenue", "order_count"]
    expected = keystone.sql(resolved_lake,
                            "SELECT profile_id, email FROM profiles WHERE order_count > 0 ORDER BY 1")
    assert table.column("profile_id").to_pylist() == [r["profile_id"] for r in expected]
    assert [e or "" for e in table.column("email").to_pylist()] == [r["email"] for r in expected]
    # DuckDB reads the same file the same way.
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}') WHERE order_count > 0").fetchone()[0]
    assert n == table.num_rows


def test_hashed_csv_export_matches_hashlib_and_holds_no_clear_email(keystone, resolved_lake, tmp_path):
    out = tmp_path / "known.csv"
    keystone("segment", "export", "known", "--to", out, "--format", "csv", "--hash-identifiers",
             lake=resolved_lake)
    table = pacsv.read_csv(out)
    clear = {r["profile_id"]: r["email"] for r in keystone.sql(
        resolved_lake, "SELECT profile_id, email FROM profiles WHERE email IS NOT NULL")}
    assert table.num_rows == len(clear) > 0
    for pid, digest in zip(table.column("profile_id").to_pylist(), table.column("email").to_pylist()):
        assert digest == hashlib.sha256(clear[pid].strip().lower().encode()).hexdigest()
    assert "@" not in out.read_text()


def test_export_to_s3_is_readable_there(keystone, resolved_lake, moto, tmp_path):
    url = moto.url("exports/buyers.parquet")
    keystone("segment", "export", "buyers", "--to", url, lake=resolved_lake, env=moto.env())
    body = moto.client().get_object(Bucket=moto.bucket, Key="exports/buyers.parquet")["Body"].read()
    local = tmp_path / "from-s3.parquet"
    local.write_bytes(body)
    assert pq.read_table(local).num_rows == int(
        keystone.sql(resolved_lake, "SELECT count(*) AS n FROM segments.buyers")[0]["n"])


def test_forget_rewrites_exports_written_to_s3(keystone, resolved_lake, moto, tmp_path):
    """An erasure reaches the files Keystone exported to object storage: the
    person's rows are gone from the Parquet and the CSV object, every other
    row is kept as it was."""
    lake = tmp_path / "lake"
    shutil.copytree(resolved_lake, lake)
    env = moto.env()
    keys = {"parquet": "forget/known.parquet", "csv": "forget/known.csv"}
    for fmt, key in keys.items():
        keystone("segment", "export", "known", "--to", moto.url(key), "--format", fmt, lake=lake, env=env)

    def body(key: str) -> bytes:
        return moto.client().get_object(Bucket=moto.bucket, Key=key)["Body"].read()

    csv_before = body(keys["csv"]).decode().splitlines()
    parquet_before = pq.read_table(io.BytesIO(body(keys["parquet"])))
    person = keystone.sql(
        lake, "SELECT profile_id, email FROM profiles WHERE email IS NOT NULL ORDER BY profile_id LIMIT 1")[0]
    report = json.loads(keystone("forget", f"email:{person['email']}", "--json", lake=lake, env=env).stdout)
    # The two files above, and any earlier export of this lake's copy that held them.
    assert report["exports_rewritten"] >= 2, report

    for key in keys.values():
        data = body(key)
        assert person["email"].encode() not in data
        assert person["profile_id"].encode() not in data
    assert body(keys["csv"]).decode().splitlines() == [
        line for line in csv_before if person["profile_id"] not in line]
    parquet_after = pq.read_table(io.BytesIO(body(keys["parquet"])))
    assert parquet_after.num_rows == parquet_before.num_rows - 1
    assert parquet_after.schema == parquet_before.schema
