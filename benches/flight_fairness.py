"""Does a heavy Flight SQL query make small ones wait?

  flight_fairness.py URI KEY SQL

One ADBC connection runs SQL (the heavy query) while another sends
`SELECT 1` every 50 ms until it ends; prints the heavy query's time and the
latencies of the small queries meanwhile (median, p90, max). Run it against
`keystone serve` with a lake big enough for SQL to take seconds, e.g.
`SELECT sum(length(regexp_replace(context, '[a-z]+', 'x', 'g'))) FROM events`
on 1 M events.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import adbc_driver_flightsql as afs
import adbc_driver_flightsql.dbapi as flight_sql


def connect(uri: str, key: str):
    return flight_sql.connect(
        uri, db_kwargs={afs.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}"}
    )


def main() -> None:
    uri, key, heavy = sys.argv[1], sys.argv[2], sys.argv[3]
    done = threading.Event()
    outcome: dict[str, object] = {}

    def run_heavy() -> None:
        with connect(uri, key) as conn, conn.cursor() as cur:
            start = time.perf_counter()
            try:
                cur.execute(heavy)
                outcome["rows"] = cur.fetch_arrow_table().num_rows
            except Exception as e:  # reported, not hidden: the probe still ends
                outcome["error"] = str(e)[:300]
            outcome["seconds"] = time.perf_counter() - start
        done.set()

    with connect(uri, key) as conn, conn.cursor() as cur:
        for _ in range(20):  # warm the connection
            cur.execute("SELECT 1")
            cur.fetch_arrow_table()
        worker = threading.Thread(target=run_heavy)
        worker.start()
        time.sleep(0.3)
        latencies = []
        while not done.is_set():
            start = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetch_arrow_table()
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
        worker.join()
    if "error" in outcome:
        print(f"heavy query failed: {outcome['error']}")
    if not latencies:
        print(f"heavy query took {outcome['seconds']:.2f} s: too short to measure anything")
        return
    latencies.sort()
    p90 = latencies[int(len(latencies) * 0.9)]
    print(
        f"heavy {outcome['seconds']:.2f} s; SELECT 1 during it: n={len(latencies)} "
        f"median {statistics.median(latencies):.1f} ms p90 {p90:.1f} max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
