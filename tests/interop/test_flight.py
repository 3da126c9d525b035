"""`keystone serve`'s Arrow Flight SQL service with the clients BI and
activation tools use: the ADBC Flight SQL driver, flightsql-dbapi and
pyarrow.flight; plus TLS with a certificate made by openssl.

One server per module over a lake of `keystone gen` data, resolved, with two
segments. Every wait is bounded; servers are killed at teardown.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import adbc_driver_flightsql as afs
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flightsql import FlightSQLClient, connect as dbapi_connect

from conftest import _clean_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlightServer:
    def __init__(self, keystone, lake: Path, wal: Path, config: Path | None = None):
        self.keystone, self.lake, self.wal, self.config = keystone, lake, wal, config
        self.http_port, self.flight_port = _free_port(), _free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "FlightServer":
        argv = [str(self.keystone.binary), "--lake", str(self.lake)]
        if self.config:
            argv += ["--config", str(self.config)]
        argv += [
            "serve", "--http", f"127.0.0.1:{self.http_port}",
            "--flight", f"127.0.0.1:{self.flight_port}", "--wal", str(self.wal),
        ]
        self.proc = subprocess.Popen(
            argv, cwd=self.keystone.cwd, env=_clean_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        import urllib.request
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve was not ready in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def world(keystone, generated, tmp_path_factory):
    """A resolved lake with segments `vip` and `buyers`, keys, and a server."""
    root = tmp_path_factory.mktemp("flight")
    lake = root / "lake"
    keystone.ingest(lake, generated.events, generated.store_purchases)
    keystone("resolve", lake=lake)
    keystone("segment", "create", "vip", "--sql",
             "SELECT profile_id FROM profiles WHERE revenue > 300", lake=lake)
    keystone("segment", "create", "buyers", "--sql",
             "SELECT profile_id FROM profiles WHERE order_count > 0", lake=lake)
    keys = {}
    for name, role, grants in [
        ("admin", "admin", []), ("analyst", "analyst", []),
        ("analyst_pii", "analyst", ["pii"]), ("activation", "activation", []),
        ("pos", "collector", []),
    ]:
        args = ["keys", "create", "--role", role, "--name", name]
        for g in grants:
            args += ["--grant", g]
        keys[name] = keystone(*args, lake=lake).stdout.strip()
    server = FlightServer(keystone, lake, root / "wal").start()
    yield {"lake": lake, "keys": keys, "server": server, "root": root}
    server.stop()


def adbc(world, key: str, **extra):
    db_kwargs = {afs.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}"}
    db_kwargs.update(extra)
    return flight_sql.connect(f"grpc://127.0.0.1:{world['server'].flight_port}", db_kwargs=db_kwargs)


def cli_rows(keystone, world, sql: str) -> list[dict[str, str]]:
    return keystone.sql(world["lake"], sql)


def test_adbc_queries_plain_and_with_bound_parameters(keystone, world):
    with adbc(world, world["keys"]["admin"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
        got = cur.fetch_arrow_table().to_pylist()
        want = cli_rows(keystone, world, "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
        assert [(r["type"], r["n"]) for r in got] == [(r["type"], int(r["n"])) for r in want]

        cur.execute(
            "SELECT profile_id, revenue FROM profiles WHERE revenue > ? AND order_count >= ? ORDER BY profile_id",
            parameters=(300.0, 1),
        )
        got = [r["profile_id"] for r in cur.fetch_arrow_table().to_pylist()]
        want = [r["profile_id"] for r in cli_rows(
            keystone, world, "SELECT profile_id FROM profiles WHERE revenue > 300 AND order_count >= 1 ORDER BY profile_id")]
        assert got == want and got, "bound parameters select the same profiles as the literal query"


def test_adbc_basic_auth_handshake(world):
    db_kwargs = {"username": "bi", "password": world["keys"]["analyst"]}
    with flight_sql.connect(f"grpc://127.0.0.1:{world['server'].flight_port}", db_kwargs=db_kwargs) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM events")
            assert cur.fetchone()[0] > 0
    with pytest.raises(adbc_driver_manager.Error):
        bad = {"username": "bi", "password": "ks_wrong"}
        with flight_sql.connect(f"grpc://127.0.0.1:{world['server'].flight_port}", db_kwargs=bad) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")


def test_adbc_get_objects_and_table_schema_show_the_catalog(world):
    with adbc(world, world["keys"]["admin"]) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["keystone"]
        schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
        assert {"public", "segments"} <= set(schemas)
        public = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert {"events", "identities", "profiles", "profile_merges", "events_resolved"} <= set(public)
        assert public["events_resolved"]["table_type"] == "VIEW"
        assert public["consents"]["table_type"] == "VIEW"
        columns = [c["column_name"] for c in public["events"]["table_columns"]]
        assert columns[:3] == ["message_id", "type", "event"] and "event_date" in columns
        segments = {t["table_name"] for t in schemas["segments"]["db_schema_tables"]}
        assert segments == {"vip", "buyers"}
        schema = conn.adbc_get_table_schema("profiles", db_schema_filter="public")
        assert schema.names[:4] == ["profile_id", "user_id", "email", "phone"]
        assert "rfm_monetary" in schema.names
    with adbc(world, world["keys"]["activation"]) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        seen = {
            (s["db_schema_name"], t["table_name"])
            for s in objects[0]["catalog_db_schemas"] for t in (s["db_schema_tables"] or [])
        }
        assert seen == {("public", "profiles"), ("segments", "vip"), ("segments", "buyers")}


def test_roles_deny_and_mask_over_adbc(keystone, world):
    with adbc(world, world["keys"]["activation"]) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="permission denied for table keystone.public.events"):
            cur.execute("SELECT count(*) FROM events")
    with adbc(world, world["keys"]["pos"]) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="collector"):
            cur.execute("SELECT 1")
    sql = "SELECT profile_id, email FROM profiles WHERE email IS NOT NULL ORDER BY profile_id LIMIT 5"
    with adbc(world, world["keys"]["analyst"]) as conn, conn.cursor() as cur:
        cur.execute(sql)
        masked = cur.fetch_arrow_table().to_pylist()
    with adbc(world, world["keys"]["analyst_pii"]) as conn, conn.cursor() as cur:
        cur.execute(sql)
        clear = cur.fetch_arrow_table().to_pylist()
    assert [r["profile_id"] for r in masked] == [r["profile_id"] for r in clear]
    for m, c in zip(masked, clear):
        assert "@" in c["email"]
        assert m["email"] == hashlib.sha256(c["email"].encode()).hexdigest()
    with adbc(world, world["keys"]["admin"]) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="COPY is not allowed"):
            cur.execute("COPY (SELECT * FROM profiles) TO '/tmp/keystone-leak.csv'")
        with pytest.raises(adbc_driver_manager.Error, match="INVALID_ARGUMENT"):
            cur.execute("SELEC 1")
        with pytest.raises(adbc_driver_manager.Error, match="NOT_FOUND"):
            cur.execute("SELECT * FROM no_such_table")
    assert not Path("/tmp/keystone-leak.csv").exists()


def test_adbc_bulk_ingest_of_store_purchases_lands_validated(keystone, world):
    ts = pa.array([1762000000000000, 1762000060000000, 1762000120000000], pa.timestamp("us", tz="UTC"))
    purchases = pa.table({
        "type": ["track", "track", "track"],
        "event": ["Order Completed"] * 3,
        "message_id": ["adbc-pos-1", "adbc-pos-2", "adbc-pos-3"],
        "email": [" Store.Shopper@Example.ORG ", None, "second@example.org"],
        "timestamp": ts,
        "revenue": [59.9, 12.0, 30.5],
        "order_id": ["T-1", "T-2", "T-3"],
        "properties": ['{"store":"Lyon"}', '{"store":"Lyon"}', '{"store":"Paris"}'],
    })
    with adbc(world, world["keys"]["pos"]) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("events", purchases, mode="append") == 2
        # The same table again is recognised by its content and not loaded twice.
        assert cur.adbc_ingest("events", purchases, mode="append") == 0
        with pytest.raises(adbc_driver_manager.Error, match="events only"):
            cur.adbc_ingest("profiles", purchases, mode="append")
    rows = cli_rows(keystone, world,
                    "SELECT message_id, email, source, revenue FROM events WHERE message_id LIKE 'adbc-pos-%' ORDER BY 1")
    assert rows == [
        {"message_id": "adbc-pos-1", "email": "store.shopper@example.org", "source": "pos", "revenue": "59.9"},
        {"message_id": "adbc-pos-3", "email": "second@example.org", "source": "pos", "revenue": "30.5"},
    ]
    bad = cli_rows(keystone, world, "SELECT reason FROM quarantine WHERE file LIKE 'flight ingest%'")
    assert len(bad) == 1 and "no identifier" in bad[0]["reason"]
    with adbc(world, world["keys"]["analyst"]) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="collector or admin"):
            cur.adbc_ingest("events", purchases, mode="append")


def test_flightsql_dbapi_plain_queries(keystone, world):
    client = FlightSQLClient(host="127.0.0.1", port=world["server"].flight_port,
                             insecure=True, token=world["keys"]["analyst"])
    conn = dbapi_connect(client)
    cur = conn.cursor()
    cur.execute("SELECT event, count(*) AS n FROM events WHERE type = 'track' GROUP BY event ORDER BY event")
    got = [(e, n) for e, n in cur.fetchall()]
    want = [(r["event"], int(r["n"])) for r in cli_rows(
        keystone, world, "SELECT event, count(*) AS n FROM events WHERE type = 'track' GROUP BY event ORDER BY event")]
    assert got == want and got


def test_pyarrow_flight_pulls_a_segment_with_a_raw_doget(keystone, world):
    client = flight.FlightClient(f"grpc://127.0.0.1:{world['server'].flight_port}")
    header = client.authenticate_basic_token("emailer", world["keys"]["activation"])
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer kst_")
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_path("segments", "vip"), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.schema == info.schema
    want = sorted(r["profile_id"] for r in cli_rows(keystone, world, "SELECT profile_id FROM segments.vip"))
    assert sorted(table.column("profile_id").to_pylist()) == want and want
    # Activation keys without the pii grant get emails hashed.
    emails = [e for e in table.column("email").to_pylist() if e]
    assert emails and all(len(e) == 64 and "@" not in e for e in emails)
    with pytest.raises(flight.FlightUnauthorizedError):
        client.get_flight_info(flight.FlightDescriptor.for_path("events"), options)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(flight.FlightDescriptor.for_path("segments", "vip"))


def _make_cert(dir: Path) -> tuple[Path, Path]:
    cert, key = dir / "flight.pem", dir / "flight.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_tls_serves_encrypted_and_refuses_plaintext(keystone, world):
    root = world["root"]
    cert, key = _make_cert(root)
    config = root / "tls.toml"
    config.write_text(f'[flight]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    server = FlightServer(keystone, world["lake"], root / "wal-tls", config=config).start()
    try:
        uri = f"grpc+tls://127.0.0.1:{server.flight_port}"
        db_kwargs = {
            afs.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {world['keys']['admin']}",
            afs.DatabaseOptions.TLS_ROOT_CERTS.value: cert.read_text(),
        }
        with flight_sql.connect(uri, db_kwargs=db_kwargs) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM segments.buyers")
            assert cur.fetchone()[0] > 0
        plain = flight.FlightClient(f"grpc://127.0.0.1:{server.flight_port}")
        options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {world['keys']['admin']}".encode())], timeout=5)
        with pytest.raises(flight.FlightError):
            plain.get_flight_info(flight.FlightDescriptor.for_path("profiles"), options)
    finally:
        server.stop()
