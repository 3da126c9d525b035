"""Flight SQL clients for benches/flight.sh (ADBC, the way BI and activation
tools connect).

  flight_clients.py stream URI KEY SQL
      one query, results read batch by batch (never whole): prints JSON
      {rows, bytes, seconds} — bytes are pyarrow's nbytes of every batch.
  flight_clients.py latency URI KEY RUNS SQL
      one connection runs SQL RUNS times, each result fetched whole:
      prints JSON {runs, median_ms, min_ms, max_ms}.
  flight_clients.py concurrent URI KEY CLIENTS ROUNDS SQL [SQL...]
      CLIENTS threads, each with its own connection, run every SQL ROUNDS
      times; prints JSON {queries, p50_ms, p99_ms, max_ms, seconds}.
"""

from __future__ import annotations

import json
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


def stream(uri: str, key: str, sql: str) -> None:
    with connect(uri, key) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        rows = nbytes = 0
        for batch in reader:
            rows += batch.num_rows
            nbytes += batch.nbytes
        seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "bytes": nbytes, "seconds": round(seconds, 3)}))


def latency(uri: str, key: str, runs: int, sql: str) -> None:
    times: list[float] = []
    with connect(uri, key) as conn, conn.cursor() as cur:
        for _ in range(runs):
            t = time.perf_counter()
            cur.execute(sql)
            cur.fetch_arrow_table()
            times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({
        "runs": runs, "median_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2), "max_ms": round(max(times), 2),
    }))


def concurrent(uri: str, key: str, clients: int, rounds: int, queries: list[str]) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        try:
            with connect(uri, key) as conn, conn.cursor() as cur:
                barrier.wait()
                for r in range(rounds):
                    for q in queries[i % len(queries):] + queries[: i % len(queries)]:
                        t = time.perf_counter()
                        cur.execute(q)
                        cur.fetch_arrow_table()
                        with lock:
                            latencies.append((time.perf_counter() - t) * 1000)
        except Exception as e:  # reported, and the bench fails
            with lock:
                errors.append(repr(e))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        print(json.dumps({"errors": errors[:3]}))
        sys.exit(1)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(json.dumps({
        "queries": len(latencies), "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(p(0.99), 1), "max_ms": round(latencies[-1], 1), "seconds": round(seconds, 2),
    }))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stream":
        stream(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "latency":
        latency(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif mode == "concurrent":
        concurrent(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])
    else:
        sys.exit(__doc__)
