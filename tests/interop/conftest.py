"""Fixtures for the Python interop tests of Keystone's Delta lake.

The binary under test comes from the environment variable KEYSTONE_BIN; every
subprocess started here has a timeout, and every server is stopped at teardown.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Timeouts (seconds) for the subprocesses started by the tests.
KEYSTONE_TIMEOUT = 120
MOTO_READY_TIMEOUT = 10

# Variables that would let the caller's environment leak into a test's lake.
_LEAKY_ENV = ("KEYSTONE_LAKE", "KEYSTONE_CONFIG")


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LEAKY_ENV and not k.startswith("AWS_")
    }
    env["NO_COLOR"] = "1"
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------
# The binary
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keystone_bin() -> Path:
    value = os.environ.get("KEYSTONE_BIN")
    if not value:
        pytest.fail(
            "KEYSTONE_BIN is not set: point it at the built keystone binary, e.g.\n"
            "  KEYSTONE_BIN=$HOME/.cache/keystone/target/debug/keystone "
            ".venv/bin/pytest tests/interop -q",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"KEYSTONE_BIN={value!r} is not an executable file", pytrace=False)
    return path


class Keystone:
    """Runs the keystone binary in a scratch working directory."""

    def __init__(self, binary: Path, cwd: Path):
        self.binary = binary
        self.cwd = cwd

    def _argv(self, args, lake) -> list[str]:
        argv = [str(self.binary)]
        if lake is not None:
            argv += ["--lake", str(lake)]
        return argv + [str(a) for a in args]

    def __call__(
        self,
        *args,
        lake=None,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = KEYSTONE_TIMEOUT,
    ) -> subprocess.CompletedProcess:
        argv = self._argv(args, lake)
        proc = subprocess.run(
            argv,
            cwd=self.cwd,
            env=_clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, (
                f"`{' '.join(argv)}` exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def popen(self, *args, lake=None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start keystone without waiting; finish it with `.communicate(timeout=...)`."""
        return subprocess.Popen(
            self._argv(args, lake),
            cwd=self.cwd,
            env=_clean_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Convenience wrappers -------------------------------------------------

    def ingest(self, lake, *files, env=None, extra=()) -> dict:
        proc = self("ingest", *files, "--json", *extra, lake=lake, env=env)
        return json.loads(proc.stdout)

    def sql(self, lake, query: str, env=None) -> list[dict[str, str]]:
        """Rows of `keystone sql QUERY --format csv`, as dicts of strings."""
        proc = self("sql", query, "--format", "csv", lake=lake, env=env)
        return list(csv.DictReader(io.StringIO(proc.stdout)))

    def count(self, lake, table: str = "events", env=None) -> int:
        rows = self.sql(lake, f"SELECT count(*) AS n FROM {table}", env=env)
        assert len(rows) == 1, rows
        return int(rows[0]["n"])


@pytest.fixture(scope="session")
def keystone(keystone_bin, tmp_path_factory) -> Keystone:
    return Keystone(keystone_bin, tmp_path_factory.mktemp("keystone-cwd"))


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclass
class Generated:
    dir: Path
    events: Path
    store_purchases: Path
    mapping: Path
    truth: Path


def generate(keystone: Keystone, out: Path, profiles: int, seed: int) -> Generated:
    keystone(
        "gen", "--profiles", profiles, "--out", out, "--seed", seed, "--end", "2026-11-01"
    )
    g = Generated(
        dir=out,
        events=out / "events.ndjson",
        store_purchases=out / "store_purchases.csv",
        mapping=out / "store_purchases.mapping.toml",
        truth=out / "truth.csv",
    )
    for f in (g.events, g.store_purchases, g.mapping, g.truth):
        assert f.is_file(), f"keystone gen did not write {f}"
    return g


@pytest.fixture(scope="session")
def generated(keystone, tmp_path_factory) -> Generated:
    return generate(keystone, tmp_path_factory.mktemp("gen-500-seed7"), profiles=500, seed=7)


@dataclass
class LocalLake:
    path: Path
    ingest: dict  # the `ingest --json` report

    @property
    def events(self) -> Path:
        return self.path / "events"


@pytest.fixture(scope="session")
def local_lake(keystone, generated, tmp_path_factory) -> LocalLake:
    """A local lake holding the generated NDJSON and CSV, loaded in one ingest.

    Session-scoped to keep the suite fast: tests must only read it.
    """
    path = tmp_path_factory.mktemp("local") / "lake"
    report = keystone.ingest(path, generated.events, generated.store_purchases)
    assert report["events"] > 0, report
    return LocalLake(path=path, ingest=report)


# --------------------------------------------------------------------------
# DuckDB with the delta extension shipped by the duckdb-extension-delta wheel
# --------------------------------------------------------------------------


def duckdb_delta_extension_path() -> Path:
    import duckdb
    import duckdb_extension_delta

    root = Path(duckdb_extension_delta.__file__).parent / "extensions"
    path = root / f"v{duckdb.__version__}" / "delta.duckdb_extension"
    if not path.is_file():
        found = sorted(str(p.relative_to(root)) for p in root.glob("*/*.duckdb_extension"))
        raise FileNotFoundError(
            f"no delta extension for DuckDB {duckdb.__version__} in {root} (found: {found}); "
            "duckdb and duckdb-extension-delta must be the same version"
        )
    return path


@pytest.fixture
def duckdb_delta():
    """A DuckDB connection (UTC) with the delta extension loaded from the wheel, offline."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"LOAD '{duckdb_delta_extension_path()}'")
    con.execute("SET TimeZone = 'UTC'")
    yield con
    con.close()


# --------------------------------------------------------------------------
# S3 (moto server)
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    bucket: str
    log: Path

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """AWS_* variables for a keystone subprocess (optionally via another endpoint)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def storage_options(self) -> dict[str, str]:
        return self.env()

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )


def _moto_server_executable() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("moto_server")
    if not found:
        pytest.fail(
            f"moto_server not found beside {sys.executable} nor on PATH: "
            "pip install -r tests/interop/requirements.txt",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + MOTO_READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited {proc.returncode}:\n{log.read_text()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"moto_server not ready on {endpoint} after {MOTO_READY_TIMEOUT}s:\n{log.read_text()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        s3 = S3(endpoint=endpoint, bucket="keystone-interop", log=log)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --------------------------------------------------------------------------
# A fault-injecting S3 proxy: makes two table creations collide for sure
# --------------------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class CreateBarrierProxy:
    """HTTP proxy in front of moto that holds the first PUT of a table's
    `_delta_log/00000000000000000000.json` until a second writer PUTs the same
    key (or `wait` seconds pass), then forwards both at once.

    Two processes that both found no table therefore race their CREATE TABLE
    commits deterministically instead of by luck of scheduling.
    """

    upstream: str
    table: str = "events"
    wait: float = 10.0
    endpoint: str = ""
    met: bool = False  # True when two creators were held together
    held: int = 0
    _barrier: threading.Barrier = field(default=None, repr=False)
    _server: ThreadingHTTPServer = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _first_done: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self):
        self._barrier = threading.Barrier(2, timeout=self.wait)
        self._pattern = re.compile(rf"/{re.escape(self.table)}/_delta_log/0{{20}}\.json(\?|$)")
        up = urllib.parse.urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname, up.port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._body()
                turn = 0
                if self.command == "PUT" and proxy._pattern.search(self.path):
                    turn = proxy._hold()
                if turn == 2:
                    # Let the first creator's PUT reach the store first, so the
                    # store decides the race the way S3 would, one write at a time.
                    proxy._first_done.wait(proxy.wait)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if turn == 1:
                        proxy._first_done.set()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _hold(self) -> int:
        """Wait for the other creator; return 1 or 2 (the order of arrival), 0 if not held."""
        with self._lock:
            self.held += 1
            turn = self.held
        if turn > 2:
            return 0
        try:
            self._barrier.wait()
            self.met = True
        except threading.BrokenBarrierError:
            self._first_done.set()  # only one creator came: let it through
            return 0
        return turn

    def close(self):
        self._barrier.abort()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def create_barrier_proxy(moto):
    proxy = CreateBarrierProxy(upstream=moto.endpoint)
    yield proxy
    proxy.close()
