"""The analyst query suite: Keystone (over Flight SQL, the way BI tools ask)
against DuckDB over the same Parquet files (the Delta tables' current files,
as deltalake lists them). Each query's answer is checked equal between the
two; a wrong answer fails the run.

  queries.py LAKE FLIGHT_URI KEY [RUNS]

Prints one JSON line per query {name, keystone_ms: [...], duckdb_ms: [...],
floor_ms: [...]} and a summary line {geomean_ratio}. Times are wall-clock per
query, result fetched whole (results are small); DuckDB runs in this process
with its default threads (all cores), over a view per table built from the
file list. The floor of a query is a scan-only read of the Parquet columns it
reads (READS below), decoded to Arrow by pyarrow on all cores, nothing else.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from datetime import date, datetime

import pyarrow.dataset as pads
import adbc_driver_flightsql as afs
import adbc_driver_flightsql.dbapi as flight_sql
import deltalake
import duckdb

# The person key of the suite: the login when known, else the cookie. (The
# resolved profile needs Keystone's identity rules, which DuckDB does not
# have; queries about profiles read the `profiles` table both engines see.)
K = "coalesce(user_id, anonymous_id)"
# A fixed "now": the last event, so both engines see the same windows.
NOW = "(SELECT max(\"timestamp\") FROM events)"

SUITE: list[tuple[str, str] | tuple[str, str, str]] = [
    ("profile lookup by email",
     "SELECT profile_id, user_id, email, order_count, revenue FROM profiles WHERE email = {email}"),
    ("segment sizes",
     "SELECT count(*) FILTER (WHERE revenue > 1000) AS vip, count(*) FILTER (WHERE order_count > 0) AS buyers, "
     "count(*) FILTER (WHERE order_count >= 2) AS repeat_buyers, count(*) FILTER (WHERE order_count = 0) AS browsers, "
     "count(*) FILTER (WHERE email IS NOT NULL) AS known FROM profiles"),
    ("revenue by cohort month",
     "SELECT CAST(date_trunc('month', first_seen) AS DATE) AS cohort, count(*) AS profiles, round(sum(revenue), 2) AS revenue "
     "FROM profiles GROUP BY 1 ORDER BY 1"),
    ("funnel page → cart → order in 7 days",
     f"SELECT count(*) AS viewed, count(*) FILTER (WHERE added <= viewed_at + INTERVAL '7 days') AS added, "
     f"count(*) FILTER (WHERE added <= viewed_at + INTERVAL '7 days' AND ordered >= added AND ordered <= viewed_at + INTERVAL '7 days') AS ordered "
     f"FROM (SELECT {K} AS k, min(\"timestamp\") FILTER (WHERE type = 'page') AS viewed_at, "
     f"min(\"timestamp\") FILTER (WHERE event = 'Product Added') AS added, "
     f"max(\"timestamp\") FILTER (WHERE event = 'Order Completed') AS ordered FROM events GROUP BY 1) AS f "
     f"WHERE viewed_at IS NOT NULL"),
    ("RFM distribution",
     "SELECT rfm_recency, rfm_frequency, rfm_monetary, count(*) AS n FROM profiles GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
    ("cart abandoners, last 24 h",
     f"SELECT count(*) AS abandoners FROM (SELECT {K} AS k, max(\"timestamp\") AS added FROM events "
     f"WHERE event = 'Product Added' AND \"timestamp\" >= {NOW} - INTERVAL '24 hours' GROUP BY 1) AS a "
     f"WHERE NOT EXISTS (SELECT 1 FROM events o WHERE o.event = 'Order Completed' "
     f"AND coalesce(o.user_id, o.anonymous_id) = a.k AND o.\"timestamp\" >= a.added)"),
    ("daily active people",
     f"SELECT event_date, count(DISTINCT {K}) AS active FROM events GROUP BY 1 ORDER BY 1"),
    ("events per source and type",
     "SELECT source, type, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 1, 2"),
    ("weekly retention curve",
     f"SELECT weeks, count(DISTINCT k) AS people FROM (SELECT e.k, "
     f"CAST(floor((extract(epoch FROM e.ts) - extract(epoch FROM c.first_ts)) / 604800) AS BIGINT) AS weeks "
     f"FROM (SELECT {K} AS k, \"timestamp\" AS ts FROM events) AS e "
     f"JOIN (SELECT {K} AS k, min(\"timestamp\") AS first_ts FROM events GROUP BY 1) AS c ON e.k = c.k) AS r "
     f"GROUP BY 1 ORDER BY 1"),
    ("top products by cart value",
     "SELECT product_id, round(sum(json_get_float(properties, 'price') * coalesce(json_get_int(properties, 'quantity'), 1)), 2) AS value "
     "FROM events WHERE event = 'Product Added' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
     "SELECT product_id, round(sum(CAST(json_extract(properties, '$.price') AS DOUBLE) * coalesce(CAST(json_extract(properties, '$.quantity') AS BIGINT), 1)), 2) AS value "
     "FROM events WHERE event = 'Product Added' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20"),
    ("anonymous-to-known conversion",
     "SELECT count(*) AS cookies, sum(CASE WHEN known THEN 1 ELSE 0 END) AS converted FROM "
     "(SELECT anonymous_id, bool_or(user_id IS NOT NULL) AS known FROM events WHERE anonymous_id IS NOT NULL GROUP BY 1) AS a"),
    ("sessions (30-minute gap)",
     f"SELECT count(*) AS sessions, count(DISTINCT k) AS people FROM (SELECT {K} AS k, \"timestamp\" AS ts, "
     f"lag(\"timestamp\") OVER (PARTITION BY {K} ORDER BY \"timestamp\") AS prev FROM events) AS s "
     f"WHERE prev IS NULL OR ts > prev + INTERVAL '30 minutes'"),
]


# The stored columns each query reads (partition columns such as event_date
# are not in the files and cost nothing to read).
PERSON = ["user_id", "anonymous_id"]
READS: dict[str, dict[str, list[str]]] = {
    "profile lookup by email": {"profiles": ["profile_id", "user_id", "email", "order_count", "revenue"]},
    "segment sizes": {"profiles": ["revenue", "order_count", "email"]},
    "revenue by cohort month": {"profiles": ["first_seen", "revenue"]},
    "funnel page → cart → order in 7 days": {"events": PERSON + ["timestamp", "type", "event"]},
    "RFM distribution": {"profiles": ["rfm_recency", "rfm_frequency", "rfm_monetary"]},
    "cart abandoners, last 24 h": {"events": PERSON + ["timestamp", "event"]},
    "daily active people": {"events": PERSON},
    "events per source and type": {"events": ["source", "type"]},
    "weekly retention curve": {"events": PERSON + ["timestamp"]},
    "top products by cart value": {"events": ["product_id", "properties", "event"]},
    "anonymous-to-known conversion": {"events": PERSON},
    "sessions (30-minute gap)": {"events": PERSON + ["timestamp"]},
}


def scan_floor_ms(datasets: dict[str, pads.Dataset], reads: dict[str, list[str]]) -> float:
    t = time.perf_counter()
    for table, columns in reads.items():
        datasets[table].to_table(columns=columns, use_threads=True)
    return (time.perf_counter() - t) * 1000


def normalise(rows: list[tuple]) -> list[tuple]:
    def cell(v):
        if isinstance(v, float):
            return None if math.isnan(v) else round(v, 6)
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, bool):
            return int(v)
        return v
    return sorted((tuple(cell(c) for c in r) for r in rows), key=repr)


def duckdb_session(lake: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in ("events", "profiles"):
        files = deltalake.DeltaTable(f"{lake}/{table}").file_uris()
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true)"
        )
    return con


def main() -> None:
    lake, uri, key = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    duck = duckdb_session(lake)
    datasets = {
        t: pads.dataset(deltalake.DeltaTable(f"{lake}/{t}").file_uris(), format="parquet")
        for t in ("events", "profiles")
    }
    missing = [n for n, *_ in SUITE if n not in READS]
    if missing:
        sys.exit(f"READS lacks {missing}")
    email = duck.execute(
        "SELECT email FROM profiles WHERE email IS NOT NULL AND order_count > 0 ORDER BY profile_id LIMIT 1"
    ).fetchone()[0]
    conn = flight_sql.connect(
        uri, db_kwargs={afs.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}"}
    )
    cur = conn.cursor()
    # The fixed cost of a query over Flight SQL: one that reads nothing.
    trip_ms = []
    for _ in range(max(runs, 5)):
        t = time.perf_counter()
        cur.execute("SELECT 1")
        cur.fetch_arrow_table()
        trip_ms.append((time.perf_counter() - t) * 1000)
    ratios = []
    floor_ratios = []
    wrong = []
    for entry in SUITE:
        name, ks_sql = entry[0], entry[1]
        dd_sql = entry[2] if len(entry) > 2 else ks_sql
        ks_sql = ks_sql.replace("{email}", f"'{email}'")
        dd_sql = dd_sql.replace("{email}", f"'{email}'")
        ks_ms, dd_ms, floor_ms = [], [], []
        ks_rows = dd_rows = None
        for _ in range(runs):
            t = time.perf_counter()
            cur.execute(ks_sql)
            table = cur.fetch_arrow_table()
            ks_ms.append((time.perf_counter() - t) * 1000)
            ks_rows = list(zip(*(c.to_pylist() for c in table.columns))) if table.num_columns else []
            t = time.perf_counter()
            dd_rows = duck.execute(dd_sql).fetchall()
            dd_ms.append((time.perf_counter() - t) * 1000)
            floor_ms.append(scan_floor_ms(datasets, READS[name]))
        same = normalise(ks_rows) == normalise(dd_rows)
        if not same:
            wrong.append({"query": name, "keystone": normalise(ks_rows)[:5], "duckdb": normalise(dd_rows)[:5]})
        ratio = statistics.median(ks_ms) / statistics.median(dd_ms)
        ratios.append(ratio)
        over_floor = statistics.median(ks_ms) / statistics.median(floor_ms)
        floor_ratios.append(over_floor)
        print(json.dumps({
            "name": name, "rows": len(dd_rows), "same_answer": same,
            "keystone_ms": [round(x, 1) for x in ks_ms], "duckdb_ms": [round(x, 1) for x in dd_ms],
            "floor_ms": [round(x, 1) for x in floor_ms],
            "ratio": round(ratio, 2), "keystone_over_floor": round(over_floor, 2),
        }, ensure_ascii=False), flush=True)
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    floor_geomean = math.exp(sum(math.log(r) for r in floor_ratios) / len(floor_ratios))
    print(json.dumps({"geomean_ratio_keystone_over_duckdb": round(geomean, 2),
                      "geomean_ratio_keystone_over_floor": round(floor_geomean, 2), "queries": len(ratios),
                      "round_trip_ms": round(statistics.median(trip_ms), 1),
                      "wrong": wrong}, ensure_ascii=False, default=str))
    if wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
