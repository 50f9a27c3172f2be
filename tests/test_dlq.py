"""The dead-letter queue models and bookkeeping on real SQLite files and a real PostgreSQL
(every test that takes the `db` fixture runs on both)."""

from __future__ import annotations

import io
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import IntegrityError

from neuroflow_recover.cli.render import render_stats
from neuroflow_recover.errors import DatabaseError, EntryNotFound, NeuroflowError
from neuroflow_recover.queue.database import DEFAULT_DB, open_database
from neuroflow_recover.queue.entries import (
    MAX_ID,
    AttemptEvent,
    JobFailure,
    add_event,
    dead_letter,
    dead_letter_all,
    entry_details,
    get_entry,
    list_entries,
    resolve_entry,
    storable_int,
)
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry, IngestedLog
from neuroflow_recover.queue.stats import queue_stats, stats_frame
from neuroflow_recover.times import iso


def failure(
    rule="qsiparc_parcellate",
    subject="01",
    session="01",
    keys=("run1:3:1",),
    error_type="ResourceError",
    retryable=True,
    pipeline="qsiparc",
    when=None,
):
    wildcards = {"subject": subject}
    if session is not None:
        wildcards["session"] = session
    return JobFailure(
        rule=rule,
        wildcards=wildcards,
        pipeline_name=pipeline,
        error_type=error_type,
        retryable=retryable,
        error_message="RuleException: CalledProcessError ... returned non-zero exit status 137.",
        events=[
            AttemptEvent(
                event_key=key,
                source="snakemake-log",
                run_id=key.split(":")[0],
                exit_code=137,
                error_type=error_type,
                resource="memory",
                evidence="Killed",
                resources={"mem_mb": 1000 * (n + 1)},
            )
            for n, key in enumerate(keys)
        ],
        evidence="Killed",
        resource="memory",
        exit_code=137,
        jobid=3,
        run_id=keys[-1].split(":")[0],
        failed_at=when or datetime.now(UTC),
        targets=[f"results/{subject}.txt"],
        log_paths=["logs/x.log"],
        invocation={"configfiles": [], "profile": None, "snakemake_args": ["--cores", "1"]},
        error_details={"output": [f"results/{subject}.txt"]},
    )


@pytest.fixture
def db(tmp_path, backend):
    """The queue on each backend (SQLite at the default place, a PostgreSQL database)."""
    database = open_database(backend.url(), tmp_path)
    yield database
    database.dispose()


def test_default_location_wal_and_schema(tmp_path):
    db = open_database(None, tmp_path)
    assert db.path == (tmp_path / DEFAULT_DB).absolute()
    assert db.path.exists()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    again = open_database(None, tmp_path)  # idempotent
    with again.sessions() as session:
        assert session.scalar(select(func.count(DeadLetterEntry.id))) == 0
    again.dispose()
    db.dispose()


def test_plain_path_and_url(tmp_path):
    path_db = open_database(str(tmp_path / "a" / "q.db"), tmp_path)
    assert (tmp_path / "a" / "q.db").exists()
    url_db = open_database(f"sqlite:///{tmp_path / 'b.db'}", tmp_path)
    assert (tmp_path / "b.db").exists()
    path_db.dispose()
    url_db.dispose()


def test_read_only_open_of_missing_database_creates_nothing(tmp_path):
    with pytest.raises(DatabaseError, match=r"no dead-letter database at .*neuroflow\.db"):
        open_database(None, tmp_path, create=False)
    assert not (tmp_path / ".neuroflow").exists()


def test_non_database_file_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite\n" * 200)
    with pytest.raises(DatabaseError, match="not a usable dead-letter database"):
        open_database(str(junk), tmp_path)


def test_foreign_database_and_newer_schema(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (a INTEGER)")
    with pytest.raises(DatabaseError, match="not a neuroflow dead-letter database"):
        open_database(str(other), tmp_path)
    newer = open_database(str(tmp_path / "newer.db"), tmp_path)
    with newer.engine.begin() as conn:
        conn.execute(text("UPDATE neuroflow_schema SET version = 99"))
    newer.dispose()
    with pytest.raises(DatabaseError, match="schema version 99"):
        open_database(str(tmp_path / "newer.db"), tmp_path)


def test_new_failure_then_same_job_extends_open_entry(db):
    with db.sessions.begin() as session:
        entry = dead_letter(session, failure(keys=("run1:3:1",)))
        first_id = entry.id
    with db.sessions.begin() as session:
        entry = dead_letter(
            session, failure(keys=("run2:5:1", "run2:5:2"), error_type="TransientError")
        )
        assert entry.id == first_id
    with db.sessions() as session:
        entry = get_entry(session, first_id)
        assert entry.attempts == 3
        assert [h.attempt for h in entry.history] == [1, 2, 3]
        assert [h.run_id for h in entry.history] == ["run1", "run2", "run2"]
        assert entry.error_type == "TransientError"  # the latest failure
        assert entry.run_id == "run2"
        assert entry.subject_id == "01" and entry.session_id == "01"
        assert entry.job_key == "qsiparc_parcellate/session-01_subject-01"
        assert entry.retry_history[1]["resources"] == {"mem_mb": 1000}
        assert session.scalar(select(func.count(DeadLetterEntry.id))) == 1


def test_recording_the_same_attempts_again_changes_nothing(db):
    with db.sessions.begin() as session:
        dead_letter(session, failure(keys=("run1:3:1", "run1:3:2")))
    before = _dump(db)
    for _ in range(3):
        with db.sessions.begin() as session:
            assert dead_letter(session, failure(keys=("run1:3:1", "run1:3:2"))) is None
    assert _dump(db) == before


def test_an_attempt_listed_twice_in_one_failure_is_recorded_once(db):
    """E.g. a record of the previous `run` round that also falls in this round's window."""
    with db.sessions.begin() as session:
        entry = dead_letter(session, failure(keys=("run1:3:1", "run2:3:1", "run1:3:1")))
        assert entry.attempts == 2
    with db.sessions() as session:
        keys = session.scalars(select(AttemptHistory.event_key).order_by(AttemptHistory.attempt))
        assert list(keys) == ["run1:3:1", "run2:3:1"]


def test_a_batch_queues_what_one_failure_at_a_time_would(db, tmp_path):
    """Known and repeated attempts, open and new jobs, a job twice, over 500 keys (chunks)."""
    with db.sessions.begin() as session:
        dead_letter(session, failure(subject="01", keys=("old:1:1",)))
        dead_letter(session, failure(subject="02", keys=("old:2:1",)))
    batch = [
        failure(subject="01", keys=("old:1:1", "new:1:1")),  # extends, one attempt known
        failure(subject="02", keys=("old:2:1",)),  # nothing new
        failure(subject="03", keys=("new:3:1", "new:3:2", "new:3:1")),
        failure(subject="03", keys=("new:3:3",), error_type="TransientError"),  # twice
        *[failure(subject=f"{n:04d}", keys=(f"bulk:{n}:1",)) for n in range(600)],
    ]
    one_by_one = open_database(str(tmp_path / "one.db"), tmp_path)
    with one_by_one.sessions.begin() as session:
        dead_letter(session, failure(subject="01", keys=("old:1:1",)))
        dead_letter(session, failure(subject="02", keys=("old:2:1",)))
        expected = [e.id if e else None for e in (dead_letter(session, f) for f in batch)]
    with db.sessions.begin() as session:
        queued = dead_letter_all(session, batch)
        assert [q.entry.id if q.entry else None for q in queued] == expected
        assert [q.was_open.id if q.was_open else None for q in queued[:4]] == [1, 2, None, 3]
        assert [q.failure for q in queued] == batch
    assert _dump(db) == _dump(one_by_one)
    one_by_one.dispose()


def test_a_jobs_open_entry_is_looked_up_in_the_partial_index(tmp_path):
    """Not by scanning every open entry (`resolved IS 0` did: ingest grew quadratic)."""
    db = open_database(str(tmp_path / "q.db"), tmp_path)
    seen = []
    listen = lambda conn, cursor, statement, params, context, many: seen.append((statement, params))  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listen)
    with db.sessions.begin() as session:
        dead_letter_all(session, [failure(subject="01"), failure(subject="02", keys=("r:2:1",))])
    event.remove(db.engine, "before_cursor_execute", listen)
    lookups = [(s, p) for s, p in seen if s.startswith("SELECT") and "FROM dead_letter_queue" in s]
    assert len(lookups) == 1
    with db.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + lookups[0][0], lookups[0][1]).all()
    assert [row[-1] for row in plan] == [
        "SEARCH dead_letter_queue USING INDEX uq_dead_letter_open_job (job_key=?)"
    ]
    db.dispose()


def test_real_attempts_count_only_attempts_that_ran_the_tool():
    from neuroflow_recover.queue.entries import real_attempts

    ran = AttemptEvent(event_key="a", source="attempt-record")
    not_started = AttemptEvent(event_key="b", source="attempt-record", ran=False)
    assert real_attempts([ran, not_started, ran]) == 2
    assert real_attempts([]) == 0


def test_one_open_entry_per_job_is_enforced_by_the_database(db):
    with db.sessions.begin() as session:
        dead_letter(session, failure())
    with pytest.raises(IntegrityError):
        with db.sessions.begin() as session:
            session.add(
                DeadLetterEntry(
                    rule="qsiparc_parcellate",
                    wildcards={"subject": "01", "session": "01"},
                    job_key="qsiparc_parcellate/session-01_subject-01",
                    pipeline_name="qsiparc",
                    error_type="ResourceError",
                )
            )


def test_after_resolution_a_new_failure_opens_a_new_entry(db):
    with db.sessions.begin() as session:
        first = dead_letter(session, failure(keys=("run1:3:1",))).id
    before = datetime.now(UTC)
    with db.sessions.begin() as session:
        resolved = resolve_entry(session, first, "alice", "fixed the input")
        assert resolved.resolved_by == "alice"
    with db.sessions.begin() as session:
        second = dead_letter(session, failure(keys=("run9:1:1",))).id
    assert second != first
    with db.sessions() as session:
        assert [e.id for e in list_entries(session)] == [second]
        assert {e.id for e in list_entries(session, include_resolved=True)} == {first, second}
        old = get_entry(session, first)
        assert old.resolved and old.resolution_notes == "fixed the input"
        resolved_at = old.resolved_at.replace(tzinfo=UTC)  # stored UTC, read back naive
        assert before <= resolved_at <= datetime.now(UTC)


def test_unknown_and_already_resolved_ids(db):
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, failure()).id
    with db.sessions() as session:
        with pytest.raises(EntryNotFound, match="no dead-letter entry with ID 42"):
            get_entry(session, 42)
    with db.sessions.begin() as session:
        resolve_entry(session, entry_id, "bob")
    with pytest.raises(NeuroflowError, match="already resolved"):
        with db.sessions.begin() as session:
            resolve_entry(session, entry_id, "bob")


def test_list_filters_order_and_limit(db):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with db.sessions.begin() as session:
        for n in range(5):
            entry = dead_letter(
                session,
                failure(
                    subject=f"{n:02d}",
                    keys=(f"r{n}:1:1",),
                    pipeline="qsiprep" if n % 2 else "qsiparc",
                ),
            )
            entry.created_at = base + timedelta(minutes=n)
    with db.sessions() as session:
        assert [e.subject_id for e in list_entries(session)] == ["04", "03", "02", "01", "00"]
        assert [e.subject_id for e in list_entries(session, limit=2)] == ["04", "03"]
        assert [e.subject_id for e in list_entries(session, "qsiprep")] == ["03", "01"]


def test_stats_and_renderings(db):
    with db.sessions.begin() as session:
        dead_letter(session, failure(subject="01", keys=("a:1:1",)))
        dead_letter(
            session,
            failure(
                subject="02",
                keys=("b:1:1",),
                error_type="ValidationError",
                retryable=False,
                pipeline="bids_conversion",
                rule="heudiconv_convert",
            ),
        )
        entry = dead_letter(session, failure(subject="02", session="02", keys=("c:1:1",)))
        resolve_entry(session, entry.id, "carol")
    with db.sessions() as session:
        stats = queue_stats(session)
    assert stats["total"] == 3 and stats["unresolved"] == 2 and stats["resolved"] == 1
    assert stats["by_pipeline"] == {
        "bids_conversion": {"total": 1, "unresolved": 1},
        "qsiparc": {"total": 2, "unresolved": 1},
    }
    assert stats["by_error_type"]["ValidationError"] == {"total": 1, "unresolved": 1}
    assert stats["by_subject"]["02"] == {"total": 2, "unresolved": 1}
    frame = pd.read_csv(io.StringIO(render_stats(stats, "csv")), dtype={"key": str})
    assert list(frame.columns) == ["group", "key", "total", "unresolved"]
    assert frame.equals(stats_frame(stats).astype({"key": str}))
    table = render_stats(stats, "table")
    assert "unresolved:    2" in table and "bids_conversion  1 / 1" in table


def test_entry_details_has_everything(db):
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, failure(keys=("run1:3:1", "run1:3:2"))).id
    with db.sessions() as session:
        data = entry_details(get_entry(session, entry_id))
    for key in (
        "targets",
        "log_paths",
        "slurm_job_ids",
        "invocation",
        "evidence",
        "history",
        "error_message",
        "wildcards",
        "pattern_id",
        "exit_code",
    ):
        assert key in data
    assert len(data["history"]) == 2
    assert data["invocation"]["snakemake_args"] == ["--cores", "1"]


def test_deleting_an_entry_deletes_its_history(db):
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, failure(keys=("x:1:1", "x:1:2"))).id
    with db.sessions.begin() as session:
        session.delete(get_entry(session, entry_id))
    with db.sessions() as session:
        assert session.scalar(select(func.count(AttemptHistory.id))) == 0
        assert session.scalar(select(func.count(IngestedLog.id))) == 0


def _dump(db) -> tuple:
    with db.sessions() as session:
        entries = [
            (e.id, e.job_key, e.attempts, e.error_type, e.resolved)
            for e in session.scalars(select(DeadLetterEntry).order_by(DeadLetterEntry.id))
        ]
        history = [
            (h.entry_id, h.event_key, h.attempt)
            for h in session.scalars(select(AttemptHistory).order_by(AttemptHistory.id))
        ]
    return entries, history


def test_seed_facade_keeps_the_seed_names(db):
    from neuroflow_recover.queue.entries import DeadLetterQueue

    queue = DeadLetterQueue(db.sessions)
    entry = queue.add(failure(keys=("f:1:1",)))
    assert entry is not None and queue.add(failure(keys=("f:1:1",))) is None
    queue.add(failure(subject="02", keys=("g:1:1",), pipeline="qsiprep", rule="qsiprep_preprocess"))
    assert [e.subject_id for e in queue.get_unresolved()] == ["02", "01"]
    assert [e.subject_id for e in queue.get_by_pipeline("qsiprep")] == ["02"]
    assert queue.resolve(entry.id, "manual", "seed API") is True
    assert queue.resolve(4242, "manual") is False
    assert queue.get_stats()["unresolved"] == 1


def _every_field_failure() -> JobFailure:
    """A failure with a distinct value in every field (what `show --json` must give back)."""
    t1, t2, t3 = (datetime(2026, 11, 29, 10, m, tzinfo=UTC) for m in (0, 5, 9))
    event = AttemptEvent(
        event_key="run7:12:1", source="attempt-record", run_id="run7", started_at=t1,
        ended_at=t2, exit_code=137, error_type="ResourceError", resource="memory",
        pattern_id="slurm_oom_kill_event", evidence="oom-kill event", resources={"mem_mb": 4000},
        slurm_job_id="991", slurm_state="OUT_OF_MEMORY", host="node07", peak_mem_mb=3990,
        elapsed_s=61.5, cpu_s=120.25, usage_source="record",
    )
    return JobFailure(
        rule="qsirecon_reconstruct", wildcards={"subject": "07", "session": "2"},
        pipeline_name="qsirecon", error_type="ResourceError", retryable=True,
        error_message="out of memory", events=[event], evidence="oom-kill event",
        pattern_id="slurm_oom_kill_event", resource="memory", exit_code=137,
        slurm_state="OUT_OF_MEMORY", jobid=12, run_id="run7", failed_at=t3,
        targets=["t1.txt"], log_paths=["logs/a.log"], slurm_job_ids=["991"],
        invocation={"snakemake_args": ["--cores", "2"]}, error_details={"output": ["o.txt"]},
    )


def test_an_entry_gives_back_exactly_what_was_recorded(db):
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, _every_field_failure()).id
    with db.sessions() as session:
        data = entry_details(get_entry(session, entry_id))
    created, updated = data.pop("created_at"), data.pop("updated_at")
    assert created.endswith("+00:00") and updated.endswith("+00:00")
    assert data == {
        "id": entry_id, "pipeline": "qsirecon", "subject": "07", "session": "2",
        "rule": "qsirecon_reconstruct", "job_key": "qsirecon_reconstruct/session-2_subject-07",
        "error_type": "ResourceError", "resource": "memory", "attempts": 1, "retryable": True,
        "resolved": False, "resolved_by": None, "failed_at": "2026-11-29T10:09:00+00:00",
        "pipeline_run_id": 12, "run_id": "run7", "wildcards": {"subject": "07", "session": "2"},
        "error_message": "out of memory", "error_details": {"output": ["o.txt"]},
        "evidence": "oom-kill event", "pattern_id": "slurm_oom_kill_event", "exit_code": 137,
        "slurm_state": "OUT_OF_MEMORY", "targets": ["t1.txt"], "log_paths": ["logs/a.log"],
        "slurm_job_ids": ["991"], "invocation": {"snakemake_args": ["--cores", "2"]},
        "resolved_at": None, "resolution_notes": None,
        "history": [{
            "attempt": 1, "event_key": "run7:12:1", "run_id": "run7",
            "started_at": "2026-11-29T10:00:00+00:00", "ended_at": "2026-11-29T10:05:00+00:00",
            "exit_code": 137, "error_type": "ResourceError", "resource": "memory",
            "pattern_id": "slurm_oom_kill_event", "evidence": "oom-kill event",
            "resources": {"mem_mb": 4000}, "slurm_job_id": "991", "slurm_state": "OUT_OF_MEMORY",
            "host": "node07", "source": "attempt-record", "peak_mem_mb": 3990, "elapsed_s": 61.5,
            "cpu_s": 120.25, "usage_source": "record"}],
    }


def test_a_failure_without_attempts_opens_an_empty_entry(db):
    bare = _every_field_failure()
    bare.events, bare.error_message = [], ""
    with db.sessions.begin() as session:
        entry = dead_letter(session, bare)
        assert (entry.attempts, entry.resolved, entry.error_message) == (0, False, "")
        assert entry.created_at is not None and entry.history == []
        later = dead_letter(session, _every_field_failure())  # its first attempt is number 1
        assert later is entry and entry.attempts == 1
        assert [h.attempt for h in entry.history] == [1]


def test_an_attempt_added_to_an_entry_is_numbered_after_its_own_history(db):
    other = failure(subject="09", keys=("o:1:1", "o:1:2", "o:1:3"))
    event = replace(_every_field_failure().events[0], event_key="retry:r1:1", source="retry")
    with db.sessions.begin() as session:
        dead_letter(session, other)
        entry = dead_letter(session, _every_field_failure())
        assert [h.attempt for h in entry.history] == [1]  # loaded: add_event must refresh it
        row = add_event(session, entry, event)
        assert (row.id is not None, row.entry_id, row.attempt) == (True, entry.id, 2)
        assert entry.attempts == 2
        assert [h.event_key for h in entry.history] == ["run7:12:1", "retry:r1:1"]
    with db.sessions() as session:
        history = get_entry(session, entry.id).retry_history
    assert history[1] == {**history[0], "attempt": 2, "event_key": "retry:r1:1", "source": "retry"}
    bare = replace(_every_field_failure(), events=[], wildcards={"subject": "08"})
    with db.sessions.begin() as session:
        empty = dead_letter(session, bare)
        assert add_event(session, empty, replace(event, event_key="retry:r1:2")).attempt == 1
        assert empty.attempts == 1


def test_a_second_failure_of_the_job_extends_its_logs_and_history(db):
    first = _every_field_failure()
    second = _every_field_failure()
    second.events = [replace(first.events[0], event_key="run8:3:1", run_id="run8")]
    second.log_paths, second.slurm_job_ids = ["logs/b.log", "logs/a.log"], ["992"]
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, first).id
        assert dead_letter(session, second).id == entry_id
    with db.sessions() as session:
        entry = get_entry(session, entry_id)
        assert entry.log_paths == ["logs/a.log", "logs/b.log"]
        assert entry.slurm_job_ids == ["991", "992"]
        assert entry.attempts == 2 and [h["attempt"] for h in entry.retry_history] == [1, 2]
        with pytest.raises(ValueError, match=r"^unknown history source 'bogus'$"):
            add_event(session, entry, AttemptEvent(event_key="k", source="bogus"))


def test_entry_ids_outside_the_column_range_name_no_entry_and_the_last_one_does(db):
    bare = _every_field_failure()
    bare.events = []  # no history rows point at the id we move
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, bare).id
        session.execute(update(DeadLetterEntry).where(DeadLetterEntry.id == entry_id)
                        .values(id=MAX_ID))
    with db.sessions() as session:
        assert get_entry(session, MAX_ID).rule == "qsirecon_reconstruct"
        for bad in (0, -1, MAX_ID + 1):
            with pytest.raises(EntryNotFound, match=f"^no dead-letter entry with ID {bad}$"):
                get_entry(session, bad)


def test_stored_integers_are_64_bit():
    low, high = -(2**63), 2**63 - 1
    assert [storable_int(v) for v in (None, low, high, 0)] == [None, low, high, 0]
    assert storable_int(high + 1) is None and storable_int(low - 1) is None


def test_lists_are_newest_first_limited_and_the_seed_facade_passes_its_arguments(db):
    from neuroflow_recover.queue.entries import DeadLetterQueue

    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with db.sessions.begin() as session:
        ids = [dead_letter(session, failure(subject=f"{n:02d}", keys=(f"r:{n}:1",))).id
               for n in range(52)]
        # created_at decides, the id breaks ties: entry 0 is the newest, 1 and 2 tie
        for n, entry_id in enumerate(ids):
            when = t0 + timedelta(days=60) if n == 0 else t0 + timedelta(minutes=n if n > 2 else 2)
            session.execute(update(DeadLetterEntry).where(DeadLetterEntry.id == entry_id)
                            .values(created_at=when))
    expected = [ids[0], *reversed(ids[3:]), ids[2], ids[1]]
    with db.sessions() as session:
        assert [e.id for e in list_entries(session)] == expected[:20]
        assert [e.id for e in list_entries(session, limit=None)] == expected
    queue = DeadLetterQueue(db.sessions)
    assert [e.id for e in queue.get_unresolved()] == expected[:50]
    assert [e.id for e in queue.get_unresolved(limit=3)] == expected[:3]
    assert len(queue.get_by_pipeline("qsiparc")) == 52
    assert queue.resolve(ids[5], "alice", "fixed the license")
    with db.sessions() as session:
        entry = get_entry(session, ids[5])
        assert (entry.resolved_by, entry.resolution_notes) == ("alice", "fixed the license")
        details = entry_details(entry)
        assert details["resolved_at"] == iso(entry.resolved_at) and details["resolved_at"]
        with pytest.raises(NeuroflowError) as caught:
            resolve_entry(session, ids[5], "bob")
        assert str(caught.value) == (f"dead-letter entry {ids[5]} is already resolved "
                                     f"(by alice at {iso(entry.resolved_at)})")
