"""Real services for tests, started and stopped by the tests themselves: a throw-away PostgreSQL cluster (the `pgserver`
wheel's PostgreSQL 16, no root and no system package needed) and `mlflow server`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests


class Postgres:
    """A PostgreSQL server on a Unix socket in its own data folder; each test takes a database of its own."""

    def __init__(self, server) -> None:
        self._server = server

    def database(self, prefix: str = "test") -> str:
        """A new, empty database; its SQLAlchemy URL (the one `tune.storage` and `mlflow server` take)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._server.psql(f"CREATE DATABASE {name};")
        return f"postgresql://postgres@/{name}?host={self._server.pgdata}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the test session (per xdist worker), deleted at the end. Run as root (CI), pgserver
    runs the server as its own unprivileged user, as PostgreSQL requires; so the folder is outside pytest's private
    temporary folder, which that user could not enter."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="flat-pipeline-pg-"))
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield Postgres(server)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_server(backend_store_uri: str, cwd: Path, artifacts_destination: Path | None = None) -> Iterator[str]:
    """`mlflow server` on a free loopback port over `backend_store_uri`; with `artifacts_destination`, as the
    artifact proxy (clients send artifacts to the server, which stores them there: S3 in a cluster). Its base URL."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", backend_store_uri),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    if artifacts_destination is not None:
        command += ["--artifacts-destination", str(artifacts_destination)]
    server = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
