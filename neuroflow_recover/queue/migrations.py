"""Schema upgrades of the dead-letter database: one path, the same for SQLite and PostgreSQL.

Each step runs inside the writer's transaction that found the older version (the writer
lock serialises concurrent upgrades: the second process finds the new version). A database
is never downgraded; a newer schema is refused by `database.open_database`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, inspect, update

from ..logsetup import get_logger
from .models import SCHEMA_VERSION, AttemptHistory, Base, Delivery, Notification, SchemaInfo

log = get_logger(__name__)

# integer columns that must hold 64-bit values (logs > 2 GiB, any exit code or job id);
# SQLite's INTEGER is 64-bit already, PostgreSQL's `integer` is not
BIGINT_COLUMNS = (
    ("ingested_logs", "size"),
    ("dead_letter_queue", "exit_code"),
    ("dead_letter_queue", "pipeline_run_id"),
    ("attempt_history", "exit_code"),
)


@dataclass(frozen=True)
class Migration:
    version: int  # the version this step produces
    what: str
    apply: Callable[[Connection], None]


def _v2(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE ingested_logs ADD COLUMN host VARCHAR(255)")
    # the notification outbox (absent before version 2; checkfirst: a database made by a
    # development build may have it already)
    Base.metadata.create_all(conn, tables=[Notification.__table__, Delivery.__table__])
    if conn.dialect.name == "postgresql":
        for table, column in BIGINT_COLUMNS:
            conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE BIGINT")


def _v3(conn: Connection) -> None:
    # what each attempt used (step/usage.py); a development build may have added some
    table = AttemptHistory.__table__
    present = {column["name"] for column in inspect(conn).get_columns(table.name)}
    for name in USAGE_COLUMNS:
        if name not in present:
            kind = table.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")


USAGE_COLUMNS = ("peak_mem_mb", "elapsed_s", "cpu_s", "usage_source")

MIGRATIONS = (
    Migration(
        2, "ingested_logs.host; 64-bit log sizes, exit codes and job ids; the outbox", _v2
    ),
    Migration(3, "attempt_history: peak memory, elapsed and CPU time of each attempt", _v3),
)


def upgrade(conn: Connection, version: int) -> int:
    """Bring a database of schema `version` to SCHEMA_VERSION inside the caller's
    (writer's) transaction; returns the new version."""
    for step in MIGRATIONS:
        if step.version > version:
            log.warning("upgrading the dead-letter database schema",
                        from_version=version, to_version=step.version, change=step.what)  # fmt: skip
            step.apply(conn)
            version = step.version
    conn.execute(update(SchemaInfo).where(SchemaInfo.id == 1).values(version=version))
    assert version == SCHEMA_VERSION, "MIGRATIONS must end at models.SCHEMA_VERSION"
    return version
