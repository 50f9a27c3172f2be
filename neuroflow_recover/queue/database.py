"""Engine and session factory of the dead-letter database (SQLite or PostgreSQL): one writer
at a time, bounded waits, and what a database failure means in words.

Details (writer lock per backend, timeouts, read-only media, network file systems):
docs/architecture.md, "The dead-letter database". The caller owns transactions
(`with db.sessions.begin() as session:`); library functions take a Session.
"""

from __future__ import annotations

import errno
import sqlite3
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .. import environment
from ..errors import DatabaseError
from ..files import on_network_filesystem, read_only_location
from ..logsetup import get_logger
from .migrations import upgrade
from .models import SCHEMA_VERSION, Base, SchemaInfo

log = get_logger(__name__)

DEFAULT_DB = Path(".neuroflow") / "neuroflow.db"
DEFAULT_TIMEOUT_S = 60.0
# PostgreSQL: the transaction-level advisory lock every writing transaction takes first
# ("neuroflo" as a 64-bit integer): writers queue like SQLite's BEGIN IMMEDIATE
PG_WRITER_LOCK = 0x6E6575726F666C6F
PG_CONNECT_TIMEOUT_S = 10
# SQLSTATEs: lock_not_available, disk_full, read_only_sql_transaction,
# numeric_value_out_of_range, serialization_failure, deadlock_detected
_PG_LOCKED, _PG_FULL, _PG_READ_ONLY, _PG_RANGE = "55P03", "53100", "25006", "22003"
_PG_CONFLICTS = ("40001", "40P01")
_PG_UNDEFINED_TABLE = "42P01"  # a table gone: what SQLite reports as OperationalError
_TIMEOUTS: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


@dataclass
class Database:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    path: Path | None  # the SQLite file, None for other databases
    timeout_s: float = DEFAULT_TIMEOUT_S
    readonly: bool = False

    @property
    def where(self) -> str:
        return str(self.path) if self.path else shown_url(self.url)

    def dispose(self) -> None:
        self.engine.dispose()


def shown_url(url: str) -> str:
    """The URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


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


def timeout_from_env(default: float = DEFAULT_TIMEOUT_S) -> float:
    return environment.non_negative(environment.DB_TIMEOUT, default, "a number of seconds")


def open_database(
    db: str | None,
    workdir: Path,
    *,
    create: bool = True,
    readonly: bool = False,
    timeout: float | None = None,
) -> Database:
    """Open (and with `create`, create or upgrade) the dead-letter database.

    Writers (the default) take the database's write lock at the start of every transaction
    and wait for it up to `timeout` seconds (None: env NEUROFLOW_DB_TIMEOUT, default 60).
    `readonly` is for commands that only read: they never wait for writers. `create=False`:
    a missing database is an error. Raises DatabaseError for a file that is not a database,
    another application's database, a newer schema or a database that cannot be reached.
    """
    url = database_url(db, workdir)
    path = sqlite_path(url)
    timeout_s = timeout_from_env() if timeout is None else float(timeout)
    if path is not None:
        _check_sqlite_file(path, create=create and not readonly)
        if not readonly and path.exists() and read_only_location(path):
            raise DatabaseError(
                f"the dead-letter database {path} is read-only (its directory cannot be "
                "written: read-only media or no permission); nothing was written"
            )
    try:
        engine = _make_engine(url, path, readonly=readonly, timeout_s=timeout_s)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise DatabaseError(f"cannot use database URL {shown_url(url)!r}: {exc}") from exc
    _TIMEOUTS[engine] = timeout_s
    database = Database(url, engine, sessionmaker(engine, expire_on_commit=False), path,
                        timeout_s, readonly)  # fmt: skip
    try:
        _check_schema(database, create=create and not readonly)
    except DatabaseError:
        engine.dispose()
        raise
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        engine.dispose()
        reason = failure_reason(exc, database.where, timeout_s)
        detail = getattr(exc, "orig", None) or exc
        raise DatabaseError(
            f"{reason}; nothing was written"
            if reason
            else f"{database.where} is not a usable dead-letter database: {detail}"
        ) from exc
    return database


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    if path.is_dir():
        raise DatabaseError(f"{path} is a directory, not a dead-letter database")
    if not path.exists():
        if not create:
            raise DatabaseError(
                f"no dead-letter database at {path} (run `neuroflow-recover ingest` or `run` first)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create {path.parent}: {exc}") from exc
    fstype = on_network_filesystem(path)
    if fstype:
        log.warning(
            "the SQLite dead-letter database is on a network file system, whose locks SQLite "
            "cannot trust across hosts: use PostgreSQL for a queue shared between machines "
            "(--db postgresql+psycopg://..., README 'Sharing one queue: PostgreSQL')",
            path=str(path),
            filesystem=fstype,
        )


def _make_engine(url: str, path: Path | None, *, readonly: bool, timeout_s: float) -> Engine:
    backend = make_url(url).get_backend_name()
    if path is not None:
        return _sqlite_engine(url, path, readonly=readonly, timeout_s=timeout_s)
    if backend == "postgresql":
        return _postgres_engine(url, readonly=readonly, timeout_s=timeout_s)
    return create_engine(url)


def _sqlite_engine(url: str, path: Path, *, readonly: bool, timeout_s: float) -> Engine:
    immutable = readonly and path.exists() and read_only_location(path)
    if immutable:
        # read-only media: SQLite cannot make the WAL index (-shm) there; an immutable
        # open reads the file without any lock or journal (nobody can write it anyway)
        if Path(f"{path}-wal").exists() and Path(f"{path}-wal").stat().st_size > 0:
            log.warning("read-only media: changes still in the -wal file are not shown",
                        path=str(path))  # fmt: skip
        url = f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true"
    engine = create_engine(url, connect_args={"timeout": timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised via every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                _set_wal(cursor, timeout_s)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised via every test
        # writers take the write lock up front: no lock upgrade (and no SQLITE_BUSY) later
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str, *, readonly: bool, timeout_s: float) -> Engine:
    engine = create_engine(
        url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}, pool_pre_ping=True
    )
    if readonly:
        return engine

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # one writer at a time, like SQLite's BEGIN IMMEDIATE: every writing transaction
        # sees everything committed before it, so no two ingesters insert the same row
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(timeout_s * 1000))}")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITER_LOCK})")

    return engine


def _set_wal(cursor, timeout_s: float) -> None:
    # switching to WAL needs a moment of exclusive access; several processes opening a new
    # file at the same time may see "locked" even with a busy timeout: try again
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check_schema(database: Database, *, create: bool) -> None:
    with database.engine.begin() as conn:
        version = _schema_version(conn, database.where, create=create)
        if version is None:  # a new database
            Base.metadata.create_all(conn)
            conn.execute(SchemaInfo.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            return
        if version < SCHEMA_VERSION and not database.readonly:
            upgrade(conn, version)
            return
    if version < SCHEMA_VERSION:
        _upgrade_for_reader(database, version)


def _schema_version(conn, where: str, *, create: bool) -> int | None:
    """The schema version, None for an empty database we may create; DatabaseError else."""
    tables = set(inspect(conn).get_table_names())
    if SchemaInfo.__tablename__ not in tables:
        if tables:
            raise DatabaseError(
                f"{where} is a database but not a neuroflow dead-letter database "
                f"(tables: {', '.join(sorted(tables))})"
            )
        if not create:
            raise DatabaseError(
                f"no dead-letter database at {where} (run `neuroflow-recover ingest` or `run` first)"
            )
        return None
    version = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).scalar()
    if version is None or version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{where} has dead-letter schema version {version}, this neuroflow-recover "
            f"knows version {SCHEMA_VERSION}: upgrade neuroflow or use another --db"
        )
    return version


def _upgrade_for_reader(database: Database, version: int) -> None:
    """A reading command met an older schema: upgrade it with a writer's lock, or, on
    read-only media, read it as it is (the new columns are not read by readers)."""
    if database.path is not None and read_only_location(database.path):
        log.warning("older dead-letter schema on read-only media, read as it is",
                    version=version, current=SCHEMA_VERSION)  # fmt: skip
        return
    writer = _make_engine(database.url, database.path, readonly=False,
                          timeout_s=database.timeout_s)  # fmt: skip
    try:
        with writer.begin() as conn:
            current = _schema_version(conn, database.where, create=False)
            if current is not None and current < SCHEMA_VERSION:
                upgrade(conn, current)
    finally:
        writer.dispose()


def failure_reason(exc: BaseException, where: str, timeout_s: float | None = None) -> str | None:
    """What a database failure means, in words (None: not a failure of the database itself).

    Locked for longer than the timeout, disk full, read-only, a number out of range, or a
    database that cannot be reached."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    low = text.lower()
    code = getattr(orig, "sqlstate", None)
    waited = f"{timeout_s:g} s" if timeout_s is not None else "the configured time"
    if code == _PG_LOCKED or "database is locked" in low or "database table is locked" in low:
        return (
            f"the dead-letter database {where} stayed locked by another process for more "
            f"than {waited} (--db-timeout, env NEUROFLOW_DB_TIMEOUT)"
        )
    if (
        code == _PG_FULL
        or "database or disk is full" in low
        or "no space left" in low
        or (isinstance(orig, OSError) and orig.errno == errno.ENOSPC)
    ):
        return f"the disk holding the dead-letter database {where} is full ({text})"
    if code == _PG_READ_ONLY or "readonly database" in low or "read-only" in low:
        return f"the dead-letter database {where} is read-only ({text})"
    if "disk i/o error" in low:
        return f"disk I/O error on the dead-letter database {where} (is its disk full?)"
    if code == _PG_RANGE or isinstance(orig, OverflowError) or "out of range" in low:
        return f"a number is beyond what the dead-letter database {where} can store ({text})"
    if code == _PG_UNDEFINED_TABLE or isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sqlite3.OperationalError)
    ):
        return f"the dead-letter database {where} cannot be used: {text}"
    return None


def describe_failure(exc: BaseException, bind) -> str | None:
    """`failure_reason` for the database a Session or Engine is bound to."""
    engine = getattr(bind, "engine", bind)
    url = getattr(engine, "url", None)
    path = sqlite_path(str(url)) if url is not None and url.get_backend_name() == "sqlite" else None
    where = str(path) if path else (url.render_as_string(hide_password=True) if url else "?")
    return failure_reason(exc, where, _TIMEOUTS.get(engine))


def is_conflict(exc: BaseException) -> bool:
    """A unique-key, serialization or deadlock conflict: retrying the transaction helps."""
    if isinstance(exc, sa_exc.IntegrityError):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _PG_CONFLICTS
