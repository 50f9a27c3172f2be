"""The two database backends the queue's tests run on: SQLite files and a real PostgreSQL.

PostgreSQL comes from `tests/postgres/start-local-postgres.sh` (started by tests/run.sh,
which exports NEUROFLOW_TEST_PG_URL; a server that script left running is found through its
url file too). Every test gets a database of its own, dropped afterwards. Without a server
the PostgreSQL variants are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL_ENV = "NEUROFLOW_TEST_PG_URL"
PG_URL_FILE = Path(os.environ.get("PG_LOCAL_BASE", "/tmp/neuroflow-pg")) / "url"
BACKENDS = ("sqlite", "postgresql")


def pg_admin_url() -> str | None:
    """The test server's URL (its `postgres` database), or None when there is none."""
    url = os.environ.get(PG_URL_ENV)
    if not url and PG_URL_FILE.is_file():
        url = PG_URL_FILE.read_text().strip()
    if not url:
        return None
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception:  # noqa: BLE001 - no server: the caller skips or fails
        if os.environ.get(PG_URL_ENV):
            raise
        return None
    return url


def require_pg() -> str:
    url = pg_admin_url()
    if url is None:
        why = f"no PostgreSQL test server ({PG_URL_ENV} unset; tests/run.sh starts one)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} under CI=true: the PostgreSQL variants must run")
        pytest.skip(why)
    return url


def _admin(url: str):
    return create_engine(url, isolation_level="AUTOCOMMIT")


def create_pg_database(admin_url: str) -> str:
    """A new, empty database on the test server; its URL."""
    name = f"nf_{uuid.uuid4().hex[:16]}"
    engine = _admin(admin_url)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = _admin(admin_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@dataclass
class Backend:
    """One backend for one test: `url(root)` is what --db / open_database gets."""

    name: str
    pg_url: str | None = None  # this test's own PostgreSQL database

    def url(self, root: Path | None = None) -> str | None:
        """None = SQLite at the workflow directory's default place."""
        return self.pg_url

    def cli_args(self) -> list[str]:
        return ["--db", self.pg_url] if self.pg_url else []

    def env(self) -> dict[str, str]:
        return {"NEUROFLOW_DB": self.pg_url} if self.pg_url else {}
