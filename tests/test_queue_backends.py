"""The dead-letter schema on both backends: a database of the previous release (schema 1,
`tests/fixtures/db/`) is upgraded in place with its entries intact, to exactly the schema a
new database gets; readers upgrade it too; numbers beyond the columns' range."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from helpers import REPO
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import (
    JobFailure,
    dead_letter,
    entry_summary,
    get_entry,
    list_entries,
)
from neuroflow_recover.queue.models import SCHEMA_VERSION, IngestedLog, SchemaInfo

FIXTURES = REPO / "tests" / "fixtures" / "db"
V1_ENTRIES = [  # (id, job key, error type, attempts, resolved, resolved_by)
    (1, "qsiparc_parcellate/session-1_subject-01", "ResourceError", 2, False, None),
    (2, "qsiparc_parcellate/session-1_subject-02", "ValidationError", 1, False, None),
    (3, "qsiparc_parcellate/session-2_subject-03", "TransientError", 1, True, "alice"),
]


def v1_database(backend, tmp_path: Path) -> str:
    """The previous release's database on `backend`; its --db."""
    if backend.pg_url is None:
        copy = tmp_path / "old.db"
        shutil.copy2(FIXTURES / "neuroflow-v1.sqlite.db", copy)
        return str(copy)
    from sqlalchemy import create_engine

    engine = create_engine(backend.pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql((FIXTURES / "neuroflow-v1.postgres.sql").read_text())
    engine.dispose()
    return backend.pg_url


def _schema(db) -> dict:
    with db.engine.connect() as conn:
        found = inspect(conn)
        return {
            table: sorted((c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table))
            for table in sorted(found.get_table_names())
        } | {
            f"{table} indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                       for i in found.get_indexes(table))  # fmt: skip
            for table in sorted(found.get_table_names())
        }


def _version(db) -> int:
    with db.sessions() as session:
        return session.scalar(select(SchemaInfo.version))


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_the_previous_release_s_database_is_upgraded_in_place(backend, tmp_path, readonly):
    url = v1_database(backend, tmp_path)
    old = open_database(url, tmp_path, readonly=readonly)
    assert _version(old) == SCHEMA_VERSION == 3
    with old.sessions() as session:
        entries = [
            (e.id, e.job_key, e.error_type, e.attempts, e.resolved, e.resolved_by)
            for e in sorted(list_entries(session, include_resolved=True), key=lambda e: e.id)
        ]
        assert entries == V1_ENTRIES
        first = get_entry(session, 1)
        assert [h.event_key for h in first.history] == ["log:r1:3:1", "log:r1:3:2"]
        assert first.targets == ["results/derivatives/qsiparc/sub-01/ses-1"]
        assert get_entry(session, 3).resolution_notes == "subject withdrawn"
        (log,) = session.scalars(select(IngestedLog))
        assert (log.size, log.host) == (12345, None)
    # the upgraded database is the schema a new one gets, and takes new writes
    fresh_url = (str(tmp_path / "fresh.db") if backend.pg_url is None
                 else _other_database(backend))  # fmt: skip
    fresh = open_database(fresh_url, tmp_path)
    assert _schema(old) == _schema(fresh)
    writer = open_database(url, tmp_path)
    with writer.sessions.begin() as session:
        entry = dead_letter(session, _big_failure())
        assert entry.id == 4 and entry.exit_code == 2**40
    for db in (old, fresh, writer):
        db.dispose()


def test_a_newer_neuroflow_s_database_is_refused_and_left_alone(backend, tmp_path):
    url = v1_database(backend, tmp_path)
    db = open_database(url, tmp_path)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE neuroflow_schema SET version = 99"))
    db.dispose()
    with pytest.raises(Exception, match=r"has dead-letter schema version 99, this "
                                        r"neuroflow-recover knows version 3: upgrade neuroflow"):
        open_database(url, tmp_path)


def test_numbers_beyond_the_columns_range_are_stored_or_dropped_never_raised(backend, tmp_path):
    db = open_database(backend.url(), tmp_path)
    failure = _big_failure(exit_code=10**30, jobid=2**63)
    with db.sessions.begin() as session:
        entry = dead_letter(session, failure)
    with db.sessions() as session:
        summary = entry_summary(get_entry(session, entry.id))
        assert summary["attempts"] == 1
        stored = get_entry(session, entry.id)
        assert (stored.exit_code, stored.pipeline_run_id) == (None, None)
    db.dispose()


def _big_failure(exit_code: int = 2**40, jobid: int = 7) -> JobFailure:
    from neuroflow_recover.queue.entries import AttemptEvent

    return JobFailure(
        rule="qsiprep_preprocess", wildcards={"subject": "09"}, pipeline_name="qsiprep",
        error_type="RetryableError", retryable=True, error_message="?",
        events=[AttemptEvent(event_key=f"log:big:{jobid}:1", source="snakemake-log",
                             exit_code=exit_code)],
        exit_code=exit_code, jobid=jobid,
    )  # fmt: skip


_EXTRA: list = []


def _other_database(backend) -> str:
    from backends import create_pg_database, require_pg

    url = create_pg_database(require_pg())
    _EXTRA.append(url)
    return url


@pytest.fixture(autouse=True)
def _drop_extra():
    yield
    from backends import drop_pg_database, require_pg

    while _EXTRA:
        drop_pg_database(require_pg(), _EXTRA.pop())
