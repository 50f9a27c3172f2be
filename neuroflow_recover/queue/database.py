"""Engine and session factory of the dead-letter database.

`--db` is a SQLAlchemy URL or a plain file path (-> SQLite); the default is
`<workdir>/.neuroflow/neuroflow.db`. SQLite connections use WAL, a 60 s busy timeout,
`synchronous=NORMAL` and foreign keys, and every writing transaction starts with
`BEGIN IMMEDIATE`, so several `neuroflow-recover` processes can write at once: the second
waits for the first instead of failing with "database is locked" half-way through.

The caller owns transactions (`with db.sessions.begin() as session:`); library functions
take a Session.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseError
from .models import SCHEMA_VERSION, Base, SchemaInfo

DEFAULT_DB = Path(".neuroflow") / "neuroflow.db"
BUSY_TIMEOUT_S = 60


@dataclass
class Database:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    path: Path | None  # the SQLite file, None for other databases

    def dispose(self) -> None:
        self.engine.dispose()


def database_url(db: str | None, workdir: Path) -> str:
    """A SQLAlchemy URL from `--db` (URL or path) or the default under the workflow directory."""
    if not db:
        return f"sqlite:///{(Path(workdir) / DEFAULT_DB).absolute()}"
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).absolute()}"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def open_database(db: str | None, workdir: Path, *, create: bool = True) -> Database:
    """Open (and with `create`, create) the dead-letter database.

    `create=False` is for read-only commands: a missing database is an error and nothing is
    written. Raises DatabaseError for a file that is not a database, another application's
    database or a newer schema.
    """
    url = database_url(db, workdir)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise DatabaseError(
                    f"no dead-letter database at {path} "
                    "(run `neuroflow-recover ingest` or `run` first)"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create {path.parent}: {exc}") from exc
        elif path.is_dir():
            raise DatabaseError(f"{path} is a directory, not a dead-letter database")
    try:
        engine = _make_engine(url, path is not None, write=create)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from exc
    try:
        _check_schema(engine, url, create=create)
    except DatabaseError:
        engine.dispose()
        raise
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        engine.dispose()
        detail = getattr(exc, "orig", None) or exc
        raise DatabaseError(
            f"{path or url} is not a usable dead-letter database: {detail}"
        ) from exc
    return Database(url, engine, sessionmaker(engine, expire_on_commit=False), path)


def _make_engine(url: str, is_sqlite: bool, *, write: bool) -> Engine:
    if not is_sqlite:
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised via every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if write:
                _set_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised via every test
        # writers take the write lock up front: no lock upgrade (and no SQLITE_BUSY) later
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _set_wal(cursor) -> None:
    # switching to WAL needs a moment of exclusive access; several processes opening a new
    # file at the same time may see "locked" even with a busy timeout: try again
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check_schema(engine: Engine, url: str, *, create: bool) -> None:
    where = sqlite_path(url) or url
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        if SchemaInfo.__tablename__ not in tables:
            if tables:
                raise DatabaseError(
                    f"{where} is a database but not a neuroflow dead-letter database "
                    f"(tables: {', '.join(sorted(tables))})"
                )
            if not create:
                raise DatabaseError(
                    f"no dead-letter database at {where} "
                    "(run `neuroflow-recover ingest` or `run` first)"
                )
            Base.metadata.create_all(conn)
            conn.execute(SchemaInfo.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            return
        version = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).scalar()
        if version is None or version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{where} has dead-letter schema version {version}, this neuroflow-recover "
                f"knows version {SCHEMA_VERSION}: upgrade neuroflow or use another --db"
            )
        if create:
            Base.metadata.create_all(conn)  # idempotent: adds tables a version may miss
        add_missing_columns(conn)


def add_missing_columns(conn) -> list[str]:
    """Add the nullable columns a file made by an older neuroflow lacks (additive changes
    only: ``ALTER TABLE ... ADD COLUMN``); returns ``table.column`` of each one added."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    added = []
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable or column.primary_key:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
            added.append(f"{table.name}.{column.name}")
    return added
