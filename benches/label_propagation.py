"""The peer approach to identity resolution: connected components by label
propagation in SQL, iterated to a fixed point (as RudderStack Profiles does in
the warehouse), run in DuckDB over the same `events` Parquet files.

    python benches/label_propagation.py LAKE_DIR

Edges: every identifier an event carries is joined to the event's first
identifier (user id, else email, else anonymous id, ...), the same identifier
columns Keystone reads (email trimmed and lower-cased; no per-type limits,
caps or blocked values: the peer baseline is plain connected components).
Prints one JSON object: seconds to build edges, seconds to iterate,
iterations, nodes, components.
"""

import json
import sys
import time

import duckdb
from deltalake import DeltaTable


def main() -> None:
    lake = sys.argv[1].rstrip("/")
    files = DeltaTable(f"{lake}/events").file_uris()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    t0 = time.perf_counter()
    con.execute(
        "CREATE TABLE ev AS SELECT row_number() OVER () AS eid, user_id, anonymous_id, previous_id, "
        "lower(trim(email)) AS email, phone, device_id FROM read_parquet(?)",
        [files],
    )
    con.execute(
        """
        CREATE TABLE ids AS
        SELECT eid, kind || ':' || value AS node FROM (
          SELECT eid, 'user_id' AS kind, user_id AS value FROM ev UNION ALL
          SELECT eid, 'email', email FROM ev UNION ALL
          SELECT eid, 'phone', phone FROM ev UNION ALL
          SELECT eid, 'anonymous_id', anonymous_id FROM ev UNION ALL
          SELECT eid, 'anonymous_id', previous_id FROM ev UNION ALL
          SELECT eid, 'device_id', device_id FROM ev
        ) WHERE value IS NOT NULL AND value <> ''
        """
    )
    con.execute(
        """
        CREATE TABLE edges AS
        WITH first AS (SELECT eid, min(node) AS hub FROM ids GROUP BY eid)
        SELECT DISTINCT i.node AS a, f.hub AS b FROM ids i JOIN first f USING (eid) WHERE i.node <> f.hub
        """
    )
    con.execute(
        "CREATE TABLE e2 AS SELECT a, b FROM edges UNION ALL SELECT b, a FROM edges"
    )
    con.execute("CREATE TABLE labels AS SELECT DISTINCT node, node AS label FROM ids")
    t1 = time.perf_counter()
    iterations = 0
    while True:
        iterations += 1
        con.execute(
            """
            CREATE OR REPLACE TABLE next AS
            SELECT l.node, least(l.label, coalesce(min(n.label), l.label)) AS label
            FROM labels l LEFT JOIN e2 ON e2.a = l.node LEFT JOIN labels n ON n.node = e2.b
            GROUP BY l.node, l.label
            """
        )
        changed = con.execute(
            "SELECT count(*) FROM next JOIN labels USING (node) WHERE next.label <> labels.label"
        ).fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE next RENAME TO labels")
        if changed == 0 or iterations > 200:
            break
    t2 = time.perf_counter()
    nodes, components = con.execute(
        "SELECT count(*), count(DISTINCT label) FROM labels"
    ).fetchone()
    print(
        json.dumps(
            {
                "edges_secs": round(t1 - t0, 2),
                "iterate_secs": round(t2 - t1, 2),
                "total_secs": round(t2 - t0, 2),
                "iterations": iterations,
                "nodes": nodes,
                "components": components,
            }
        )
    )


if __name__ == "__main__":
    main()
