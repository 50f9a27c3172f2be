"""Ingesting real Snakemake logs into the dead-letter queue (idempotent, classified, robust)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from dlq_workflows import behave, main_logs, make_toy_workflow, recover, snakemake
from helpers import VENV_BIN
from neuroflow_recover.errors import DatabaseUnavailable, LogFormatError
from neuroflow_recover.logs.parser import parse_log
from neuroflow_recover.logs.records import FailedJob, JobAttempt, RunLog
from neuroflow_recover.queue import ingest
from neuroflow_recover.queue.database import describe_failure, is_conflict, open_database
from neuroflow_recover.queue.entries import (
    AttemptEvent,
    JobFailure,
    dead_letter,
    entry_details,
    mark_resolved,
)
from neuroflow_recover.queue.ingest import (
    IngestContext,
    IngestReport,
    LogIngest,
    _record_event,
    _records_in_window,
    build_failure,
    catch_up,
    close_succeeded,
    file_digest,
    ingest_live,
    ingest_log,
    ingest_logs,
    ingest_one,
    logs_to_catch_up,
    not_committed_message,
    pending_logs,
)
from neuroflow_recover.queue.models import (
    AttemptHistory,
    DeadLetterEntry,
    IngestedLog,
    Notification,
)
from neuroflow_recover.step.attempts import AttemptRecord, write_record
from neuroflow_recover.times import local_as_utc
from neuroflow_recover.workflow.config import load_config, validate_config
from neuroflow_recover.workflow.layout import final_targets, job_key
from neuroflow_recover.workflow.sheet import load_sessions

# runs real Snakemake workflows; the tests of stored logs (below) run in the mutation audit too
workflow = pytest.mark.workflow

NO_DICOM = "Error: Unable to find any DICOM images in dicom/01 (or subfolders 5 deep)"
STALE = "OSError: [Errno 116] Stale file handle"
REPORT = "out/derivatives/qsiprep/sub-01.html"  # the output of qsiprep_preprocess for 01


def _two_failing_runs(root: Path, use_exec: bool) -> Path:
    make_toy_workflow(root, [("01", "1"), ("01", "2"), ("02", "1")], use_exec=use_exec)
    behave(root, "01", "2", f"until|fixed|1|{NO_DICOM}")
    behave(root, "02", "1", f"times|1|1|{STALE}")
    first = snakemake(root, "--keep-going")
    assert first.returncode != 0, first.stderr
    second = snakemake(root, "--keep-going")  # 02_1 now succeeds, 01_2 fails again
    assert second.returncode != 0, second.stderr
    assert len(main_logs(root)) == 2
    return root


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory) -> Path:
    return _two_failing_runs(tmp_path_factory.mktemp("plain"), use_exec=False)


@pytest.fixture(scope="module")
def exec_runs(tmp_path_factory) -> Path:
    return _two_failing_runs(tmp_path_factory.mktemp("exec"), use_exec=True)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _snapshot(db) -> tuple:
    with db.sessions() as session:
        entries = [
            (
                e.id,
                e.job_key,
                e.pipeline_name,
                e.subject_id,
                e.session_id,
                e.error_type,
                e.retryable,
                e.attempts,
                e.evidence,
                tuple(e.targets),
                e.resolved,
            )
            for e in session.scalars(select(DeadLetterEntry).order_by(DeadLetterEntry.id))
        ]
        history = [
            (h.entry_id, h.event_key, h.attempt, h.error_type, h.source)
            for h in session.scalars(select(AttemptHistory).order_by(AttemptHistory.id))
        ]
        logs = [
            (row.sha256, row.run_id, row.n_failed)
            for row in session.scalars(select(IngestedLog).order_by(IngestedLog.id))
        ]
    return entries, history, logs


@workflow
def test_ingesting_the_same_logs_three_times_leaves_the_same_rows(plain_runs, tmp_path, backend):
    root = _copy(plain_runs, tmp_path / "wf")
    cfg = load_config(root)
    db = open_database(backend.url(), root)
    snapshots = []
    for n in range(3):
        with db.sessions() as session:
            report = ingest_logs(session, root, cfg)
        statuses = [item.status for item in report.logs]
        assert statuses == (["ingested"] * 2 if n == 0 else ["already-ingested"] * 2)
        # explicit paths too: still nothing new
        with db.sessions() as session:
            again = ingest_logs(session, root, cfg, main_logs(root))
        assert {item.status for item in again.logs} == {"already-ingested"}
        snapshots.append(_snapshot(db))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    entries, history, logs = snapshots[0]
    assert len(entries) == 2 and len(logs) == 2
    by_job = {e[1]: e for e in entries}
    validation = by_job["toy_step/session-2_subject-01"]
    assert validation[2:8] == ("toy_step", "01", "2", "ValidationError", False, 2)
    assert "Unable to find any DICOM images" in validation[8]
    assert validation[9] == ("results/01/2.txt",)
    # 02_1 failed in run 1 and succeeded in run 2, which rewrote its rule log: without an
    # attempt record only the main log's "exit status 1" is left (see the exec test)
    transient = by_job["toy_step/session-1_subject-02"]
    assert transient[5:8] == ("NonRetryableError", False, 1)
    assert [h[4] for h in history] == ["snakemake-log"] * 3
    db.dispose()


@workflow
def test_attempt_records_give_the_classification_and_history(exec_runs, tmp_path, backend):
    root = _copy(exec_runs, tmp_path / "wf")
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        ingest_logs(session, root, load_config(root))
    with db.sessions() as session:
        entries = {e.job_key: e for e in session.scalars(select(DeadLetterEntry))}
        data = entry_details(entries["toy_step/session-2_subject-01"])
    assert data["error_type"] == "ValidationError" and data["retryable"] is False
    assert data["pattern_id"]  # the step runner's pattern id
    assert [h["source"] for h in data["history"]] == ["attempt-record", "attempt-record"]
    first = data["history"][0]
    assert first["exit_code"] == 1
    assert first["resources"]["mem_mb"] == 100
    assert first["host"]
    assert "Unable to find any DICOM images" in first["evidence"]
    assert "logs/toy_step/01_2.log" in data["log_paths"]
    # the record kept the evidence the rule log lost when the job succeeded in run 2
    transient = entries["toy_step/session-1_subject-02"]
    assert (transient.error_type, transient.pattern_id) == ("TransientError", "stale_nfs")
    db.dispose()


@workflow
def test_garbage_and_in_progress_logs_are_skipped_without_aborting(plain_runs, tmp_path, backend):
    root = _copy(plain_runs, tmp_path / "wf")
    log_dir = root / ".snakemake" / "log"
    (log_dir / "2000-01-01T000000.000001.snakemake.log").write_bytes(bytes(range(256)) * 64)
    (log_dir / "2000-01-01T000000.000002.snakemake.log").write_text("")
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        report = ingest_logs(session, root, load_config(root))
    status = {Path(item.path).name: item.status for item in report.logs}
    assert status["2000-01-01T000000.000001.snakemake.log"] == "unreadable"
    assert [status[log.name] for log in main_logs(root)[-2:]] == ["ingested", "ingested"]
    assert len(report.entry_ids) == 2
    ingested = list(status.values()).count("ingested")
    with db.sessions() as session:
        assert session.scalar(select(func.count(IngestedLog.id))) == ingested

    # a lock left by a killed Snakemake (no process alive): its log is read as it is
    growing = log_dir / "2099-01-01T000000.000001.snakemake.log"
    first_log = main_logs(root)[-1].read_text().splitlines(keepends=True)
    growing.write_text("".join(first_log[: max(5, len(first_log) // 3)]))
    locks = root / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text("results/01/1.txt\n")
    with db.sessions() as session:
        report = ingest_logs(session, root, load_config(root), [growing])
    assert [item.status for item in report.logs] == ["ingested"]
    shutil.rmtree(locks)
    db.dispose()


@workflow
def test_the_log_of_a_live_run_is_left_for_later(plain_runs, tmp_path):
    """A Snakemake that holds the lock and is alive: its log is `in-progress`, not read."""
    root = _copy(plain_runs, tmp_path / "wf")
    with open(root / "jobs.txt", "a") as jobs:
        jobs.write("03 1\n")
    behave(root, "03", "1", "wait|go|0|")
    holder = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--cores", "1", "results/03/1.txt"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a safety bound, not a speed claim
        while not (root / "started_03_1").exists():  # its job runs: the lock is held
            assert holder.poll() is None, "Snakemake ended before its job started"
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        live = main_logs(root)[-1]
        db = open_database(None, root)
        with db.sessions() as session:
            report = ingest_logs(session, root, load_config(root), [live])
        assert [item.status for item in report.logs] == ["in-progress"]
        with db.sessions() as session:
            assert session.scalar(select(func.count(IngestedLog.id))) == 0
        db.dispose()
    finally:
        (root / "go").write_text("")
        holder.wait(timeout=600)


@workflow
def test_a_success_in_a_later_log_closes_the_open_entry(plain_runs, tmp_path, backend):
    """02_1 failed in run 1 and succeeded in run 2: ingesting both leaves it resolved."""
    root = _copy(plain_runs, tmp_path / "wf")
    first, second = main_logs(root)
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        report = ingest_logs(session, root, load_config(root), [first])
    (transient_id,) = [
        i for i, f in zip(report.entry_ids, report.failures) if f.wildcards["subject"] == "02"
    ]
    with db.sessions() as session:
        report = ingest_logs(session, root, load_config(root), [second])
    assert report.to_dict()["resolved_ids"] == [transient_id]
    with db.sessions() as session:
        entries = {e.job_key: e for e in session.scalars(select(DeadLetterEntry))}
        closed = entries["toy_step/session-1_subject-02"]
        assert (closed.id, closed.resolved, closed.resolved_by) == (
            transient_id,
            True,
            "snakemake",
        )
        run_id = second.name.removesuffix(".snakemake.log")
        assert closed.resolution_notes.startswith(
            f"the job succeeded in Snakemake run {run_id} (log .snakemake/log/{second.name}, "
        )
        assert entries["toy_step/session-2_subject-01"].resolved is False  # failed again
    db.dispose()


@workflow
def test_a_success_older_than_the_last_failure_does_not_close_the_entry(plain_runs, tmp_path, backend):
    """Logs ingested out of order: the success in run 2 predates a failure recorded later."""
    root = _copy(plain_runs, tmp_path / "wf")
    first, second = main_logs(root)
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        ingest_logs(session, root, load_config(root), [first])
    with db.sessions.begin() as session:
        entry = session.scalars(
            select(DeadLetterEntry).where(DeadLetterEntry.subject_id == "02")
        ).one()
        entry.failed_at = datetime.now(UTC)  # it failed again after run 2
    with db.sessions() as session:
        report = ingest_logs(session, root, load_config(root), [second])
    assert report.to_dict()["resolved_ids"] == []
    with db.sessions() as session:
        assert (
            session.scalar(
                select(func.count(DeadLetterEntry.id)).where(DeadLetterEntry.resolved.is_(False))
            )
            == 2
        )
    db.dispose()


@workflow
def test_a_plain_snakemake_rerun_that_succeeds_resolves_the_entry_via_ingest(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("01", "2")])
    behave(root, "01", "2", "until|fixed|1|MemoryError")
    assert recover(root, "run", "--", "--cores", "1", "--keep-going").returncode == 1
    (entry,) = json.loads(recover(root, "list", "--json").stdout)
    (root / "fixed").write_text("")
    assert snakemake(root).returncode == 0  # outside neuroflow-recover
    ingest = recover(root, "ingest")
    assert ingest.returncode == 0, ingest.stderr
    newest = main_logs(root)[-1]
    assert ingest.stdout.splitlines() == [
        f".snakemake/log/{main_logs(root)[0].name}: already-ingested",
        f".snakemake/log/{newest.name}: ingested, 0 failed job(s); "
        f"resolved (the job succeeded): {entry['id']}",
        "dead-lettered entries: none",
    ]
    assert json.loads(recover(root, "list", "--json").stdout) == []
    shown = json.loads(recover(root, "show", str(entry["id"]), "--json").stdout)
    assert (shown["resolved"], shown["resolved_by"]) == (True, "snakemake")


@workflow
def test_logs_are_hashed_in_chunks_and_never_held_in_memory(plain_runs, tmp_path, backend):
    root = _copy(plain_runs, tmp_path / "wf")
    first = main_logs(root)[0]
    big = first.with_name("2026-01-01T000000.000001.snakemake.log")
    filler = ("x" * 1023 + "\n").encode()
    with open(big, "wb") as handle:
        handle.write(first.read_bytes())
        for _ in range(48):  # + 48 MiB of lines the parser skips
            handle.write(filler * 1024)
    data = big.read_bytes()
    assert file_digest(big) == (hashlib.sha256(data).hexdigest(), len(data))
    del data
    db = open_database(backend.url(), root)
    tracemalloc.start()
    try:
        with db.sessions() as session:
            report = ingest_logs(session, root, load_config(root), [big])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [item.status for item in report.logs] == ["ingested"]
    assert peak < 16 * 1024 * 1024, peak  # far below the log's 48 MiB
    with db.sessions() as session:
        (row,) = session.scalars(select(IngestedLog))
        assert row.size == big.stat().st_size
    db.dispose()


# --- one failed job, in process (no Snakemake): what build_failure keeps about it ----------


def _context(root: Path) -> IngestContext:
    """A study in `root` whose sheet has two sessions of subject 01 and one of 02."""
    (root / "s.tsv").write_text(
        "participant_id\tsession_id\tdicom_dir\n01\t1\td1\n01\t2\td2\n02\t1\td3\n"
    )
    return IngestContext.build(root, validate_config({"sessions": "s.tsv", "output_dir": "out"}))


def _job(**fields) -> FailedJob:
    """qsiprep_preprocess of subject 01 failed once; no failure time, message or SLURM state."""
    return FailedJob(**{
        "log_path": "run.log", "run_id": "run", "jobid": 3, "rule": "qsiprep_preprocess",
        "wildcards": {"subject": "01"}, "attempts": 1, "resources": {}, "output": [REPORT],
        "log_files": [], "message": "", **fields,
    })  # fmt: skip


def _run_log(**fields) -> RunLog:
    return RunLog(**{
        "path": "run.log", "run_id": "run", "started_at": None, "finished_at": None,
        "complete": True, "failed": True, "jobs_finished": 0, "failed_jobs": [], **fields,
    })  # fmt: skip


def _write_records(root: Path, job: FailedJob, started: list[str], errors=None) -> None:
    """Attempt records of attempt 1 of `job` started at `started` (with `errors`, else
    TransientError)."""
    for when, error in zip(started, errors or ["TransientError"] * len(started), strict=True):
        write_record(root, AttemptRecord(
            rule=job.rule, stage="qsiprep", wildcards=job.wildcards, attempt=1,
            started_at=when, ended_at=when, exit_code=1, error_class=error,
            retryable=True, resource=None, pattern_id=None, evidence=error,
        ))  # fmt: skip


def test_only_the_attempt_records_of_the_runs_time_window_classify_the_job(tmp_path):
    context, job = _context(tmp_path), _job()
    _write_records(tmp_path, job, [
        "2026-01-01T10:30:00+00:00",  # a run before: ConfigurationError
        "2026-01-02T10:30:00+00:00",  # this run: TransientError
        "2026-01-03T10:30:00+00:00",  # a run after: ResourceError
    ], ["ConfigurationError", "TransientError", "ResourceError"])  # fmt: skip
    run_log = _run_log(started_at=datetime(2026, 1, 2, 10, tzinfo=UTC),
                       finished_at=datetime(2026, 1, 2, 11, tzinfo=UTC))  # fmt: skip
    failure = build_failure(context, run_log, job)
    assert failure.error_type == "TransientError"
    assert [e.started_at for e in failure.events] == [datetime(2026, 1, 2, 10, 30, tzinfo=UTC)]


def test_a_job_without_a_failure_time_failed_when_its_run_ended_else_now(tmp_path):
    context, job = _context(tmp_path), _job()
    ended = datetime(2026, 1, 2, 11, 0)  # the main log's naive local time
    failure = build_failure(context, _run_log(finished_at=ended), job)
    assert failure.failed_at == ended.astimezone(UTC)
    before = datetime.now(UTC)
    failed_at = build_failure(context, _run_log(), job).failed_at  # the run's end unknown too
    assert failed_at.tzinfo is UTC and before <= failed_at <= datetime.now(UTC)


def test_a_failure_keeps_the_jobs_slurm_state_inputs_and_empty_message(tmp_path):
    block = JobAttempt(3, "qsiprep_preprocess", {"subject": "01"}, {}, [REPORT], [],
                       input=["bids/sub-01/ses-1", "bids/sub-01/ses-2"])  # fmt: skip
    job = _job(slurm_state="OUT_OF_MEMORY", attempt_details=[block])
    failure = build_failure(_context(tmp_path), _run_log(), job)
    assert (failure.slurm_state, failure.error_message, failure.error_details["input"]) == (
        "OUT_OF_MEMORY", "", ["bids/sub-01/ses-1", "bids/sub-01/ses-2"])  # fmt: skip


def test_a_workflow_jobs_targets_add_the_final_outputs_of_its_subjects_sessions(tmp_path):
    context = _context(tmp_path)
    failure = build_failure(context, _run_log(), _job())
    finals = final_targets(context.cfg, load_sessions(tmp_path / "s.tsv"), "01")
    assert {path.split("/")[4] for path in finals} == {"ses-1", "ses-2"}
    assert failure.targets == [REPORT, *finals]


def test_a_job_of_a_rule_outside_the_workflow_is_targeted_without_reading_the_sheet(
    tmp_path, logged
):
    context = _context(tmp_path)
    (tmp_path / "s.tsv").unlink()  # reading it would warn that it cannot be read
    job = _job(rule="toy_step", wildcards={"subject": "01", "session": "1"},
               output=["results/01/1.txt"])  # fmt: skip
    assert build_failure(context, _run_log(), job).targets == ["results/01/1.txt"]
    assert [event["event"] for event in logged] == []


def test_two_failed_jobs_that_look_alike_are_keyed_by_their_line(tmp_path, logged):
    """No stored real log has two failed jobs of one run with one key: made by hand."""
    first, second, third = _job(line=10), _job(jobid=4, line=20), _job(jobid=5, line=30)
    failures = ingest._failures(_context(tmp_path), _run_log(run_id="r1"), [first, second, third])
    key = failures[0].job_key
    assert [failure.job_key for failure in failures] == [key, f"{key}#r1:line20", f"{key}#r1:line30"]
    alike = [(e["event"], e["key"]) for e in logged if e["log_level"] == "warning"]
    said = "two failed jobs look alike; keyed by their line"
    assert alike == [(said, f"{key}#r1:line20"), (said, f"{key}#r1:line30")]


# --------------------------------------- stored real logs (no Snakemake run: in the mutation audit)

LOGS = Path(__file__).parent / "fixtures" / "logs"
GARBAGE = bytes(range(256)) * 64  # not a Snakemake log
SKIPPED_LIVE = "log of a run still in progress (Snakemake holds .snakemake/locks), skipped"


def _workdir(tmp_path: Path, *fixtures: str) -> Path:
    """A working directory holding the stored runs `fixtures`: their rule logs, and their
    main logs under `.snakemake/log/`."""
    root = tmp_path / "wf"
    (root / ".snakemake" / "log").mkdir(parents=True)
    for name in fixtures:
        shutil.copytree(LOGS / name, root, dirs_exist_ok=True)
        for log in root.glob("*.snakemake.log"):
            log.rename(root / ".snakemake" / "log" / log.name)
    return root


def _shown(path: Path) -> str:
    return f".snakemake/log/{path.name}"


def _statuses(report) -> list[tuple[str, str]]:
    return [(item.path, item.status) for item in report.logs]


def _live(db, root: Path, jobids, **options):
    with db.sessions() as session, session.begin():
        return ingest_live(session, IngestContext.build(root, {}), main_logs(root)[0], jobids,
                           **options)  # fmt: skip


def _count(db, column, *where) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count(column)).where(*where))


def test_live_ingest_dead_letters_only_the_given_jobs_and_leaves_the_log_to_the_end(
    tmp_path, backend
):
    root = _workdir(tmp_path, "keep_going_mixed")  # six jobs failed for good: jobids 0-2, 4-6
    (log,) = main_logs(root)
    db = open_database(backend.url(), root)
    result = _live(db, root, [6, 0])
    assert (result.path, result.run_id, result.status, result.message, result.held) == (
        _shown(log), "2026-11-28T153223.196332", "ingested-live", "", []
    )
    assert [(f.jobid, f.job_key) for f in result.failures] == [
        (0, "shell_stalehandle/session-2_subject-01"), (6, "always_fail/session-1_subject-02")
    ]
    with db.sessions() as session:
        queued = {e.job_key: e.id for e in session.scalars(select(DeadLetterEntry))}
    assert result.entry_ids == [queued[f.job_key] for f in result.failures]
    assert len(queued) == 2 and _count(db, AttemptHistory.id) == 4  # 1 + 3 attempts
    assert _count(db, IngestedLog.id) == 0  # the end-of-run ingest reads the log whole
    with db.sessions() as session:
        report = ingest_logs(session, root, {})
    assert _statuses(report) == [(_shown(log), "ingested")]
    assert set(result.entry_ids) < set(report.entry_ids) and len(report.entry_ids) == 6
    old = AttemptHistory.entry_id.in_(result.entry_ids)
    assert (_count(db, AttemptHistory.id, old), _count(db, IngestedLog.id)) == (4, 1)
    db.dispose()


def test_live_ingest_holds_what_hold_keeps(tmp_path, backend):
    root = _workdir(tmp_path, "keep_going_mixed")
    db = open_database(backend.url(), root)
    result = _live(db, root, [0, 6], hold=lambda failure: failure.error_type == "TransientError")
    assert [f.jobid for f in result.failures] == [0, 6]
    assert [f.jobid for f in result.held] == [0]
    with db.sessions() as session:
        (entry,) = session.scalars(select(DeadLetterEntry))
        assert (result.entry_ids, entry.job_key) == ([entry.id], "always_fail/session-1_subject-02")
    db.dispose()


def test_live_ingest_of_a_log_that_is_not_one_is_unreadable(tmp_path, backend):
    root = _workdir(tmp_path)
    log = root / ".snakemake" / "log" / "2026-01-01T000000.000001.snakemake.log"
    log.write_bytes(GARBAGE)
    with pytest.raises(LogFormatError) as error:
        parse_log(log)
    db = open_database(backend.url(), root)
    result = _live(db, root, [0])
    assert (result.path, result.run_id, result.status, result.message, result.failures) == (
        _shown(log), "2026-01-01T000000.000001", "unreadable", str(error.value), []
    )
    assert _count(db, DeadLetterEntry.id) == 0
    db.dispose()


TRAP = "slurm_retry_in_allocation"  # probe_trap 01/1 failed twice: SLURM jobs 30 and 38, FAILED
TRAP_KEY = "probe_trap/session-1_subject-01"


def _record(attempt: int, started: datetime, **fields) -> AttemptRecord:
    """An attempt record of the probe_trap job, started at `started`, 9 s long."""
    base = dict(
        rule="probe_trap", stage="probe_trap", wildcards={"subject": "01", "session": "1"},
        attempt=attempt, started_at=started.isoformat(),
        ended_at=(started + timedelta(seconds=9)).isoformat(), exit_code=None, error_class=None,
        retryable=None, resource=None, pattern_id=None, evidence=None,
    )  # fmt: skip
    return AttemptRecord(**{**base, **fields})


def _trap_start(root: Path) -> datetime:
    return local_as_utc(parse_log(main_logs(root)[0]).started_at)


def test_attempt_records_become_the_events_of_a_live_ingested_job(tmp_path, backend):
    root = _workdir(tmp_path, TRAP)
    start = _trap_start(root)
    ran = _record(
        1, start + timedelta(seconds=10), exit_code=137, error_class="ResourceError",
        retryable=True, resource="mem_mb", pattern_id="oom_kill", evidence="Killed",
        resources={"mem_mb": 300, "runtime": 5}, host="node1", tail=["reading", "Killed"],
        peak_mem_mb=310, elapsed_s=9.5, cpu_s=8.25, usage_source="sstat",
    )  # fmt: skip
    skipped = _record(
        2, start + timedelta(seconds=60), evidence="not this", skipped=True,
        tail=["not starting probe_trap: breaker open", "more"], slurm_job_id="4242",
    )  # fmt: skip
    write_record(root, ran)
    write_record(root, skipped)
    db = open_database(backend.url(), root)
    result = _live(db, root, [0])
    run_id = "2026-11-28T151822.830609"
    assert result.failures[0].events == [
        AttemptEvent(
            event_key=f"record:{TRAP_KEY}:{ran.started_at}:1", source="attempt-record",
            run_id=run_id, started_at=start + timedelta(seconds=10),
            ended_at=start + timedelta(seconds=19), exit_code=137, error_type="ResourceError",
            resource="mem_mb", pattern_id="oom_kill", evidence="Killed",
            resources={"mem_mb": 300, "runtime": 5}, slurm_job_id="30", slurm_state="FAILED",
            host="node1", peak_mem_mb=310, elapsed_s=9.5, cpu_s=8.25, usage_source="sstat",
            ran=True,
        ),
        AttemptEvent(
            event_key=f"record:{TRAP_KEY}:{skipped.started_at}:2", source="attempt-record",
            run_id=run_id, started_at=start + timedelta(seconds=60),
            ended_at=start + timedelta(seconds=69), error_type="skipped",
            evidence="not starting probe_trap: breaker open", resources={},
            slurm_job_id="4242", slurm_state="FAILED", host=None, ran=False,
        ),
    ]  # fmt: skip
    with db.sessions() as session:
        (entry,) = session.scalars(select(DeadLetterEntry))
        history = entry_details(entry)["history"]
    assert [(h["attempt"], h["source"], h["error_type"], h["slurm_job_id"]) for h in history] == [
        (1, "attempt-record", "ResourceError", "30"), (2, "attempt-record", "skipped", "4242")
    ]
    db.dispose()


def test_an_attempt_record_without_its_job_block_takes_the_jobs_slurm_facts():
    """A log that printed no job blocks: the SLURM job ids in order, the state on the last."""
    run_log = parse_log(next((LOGS / TRAP).glob("*.snakemake.log")))
    job = replace(run_log.failed_jobs[0], attempt_details=[])
    failure = SimpleNamespace(job_key=TRAP_KEY)
    start = local_as_utc(run_log.started_at)

    def event(job, attempt, **fields):
        return _record_event(job, run_log, _record(attempt, start, **fields), failure)

    first, last = event(job, 1), event(job, 2)
    assert [(e.slurm_job_id, e.slurm_state) for e in (first, last)] == [
        ("30", None), ("38", "FAILED")
    ]
    assert event(replace(job, attempts=1), 1).slurm_state == "FAILED"  # the only attempt
    succeeded = event(job, 1, tail=["done"], evidence=None, resources=None)
    assert (succeeded.error_type, succeeded.evidence, succeeded.resources) == (None, None, {})
    refused = event(job, 1, skipped=True, evidence="breaker open")  # no tail line
    assert (refused.error_type, refused.evidence, refused.ran) == ("skipped", "breaker open", False)


def _live_run(monkeypatch, root: Path) -> None:
    """Snakemake holds `root`'s lock and lives (the liveness check answers for `root` only)."""
    monkeypatch.setattr(ingest, "run_in_progress", lambda workdir: Path(workdir) == root)


def _asked(db, question, root: Path) -> list[Path]:
    with db.sessions() as session, session.begin():
        return question(session, root)


def _two_logs(tmp_path: Path, backend):
    root = _workdir(tmp_path, "memory_error", "stale_handle")
    return root, *main_logs(root), open_database(backend.url(), root)


def test_pending_logs_are_those_not_ingested_at_their_present_size(tmp_path, backend):
    root, first, second, db = _two_logs(tmp_path, backend)
    (first.parent / "2026-11-28T153156.000001.snakemake.log").symlink_to(tmp_path / "gone")
    assert _asked(db, pending_logs, root) == [first, second]  # oldest first, no dangling link
    with db.sessions() as session:
        ingest_logs(session, root, {}, [first])
    assert _asked(db, pending_logs, root) == [second]
    with open(first, "a") as handle:
        handle.write("a line written after the ingest\n")
    assert _asked(db, pending_logs, root) == [first, second]
    db.dispose()


def test_catch_up_ingests_the_pending_logs_once(tmp_path, backend):
    root, first, second, db = _two_logs(tmp_path, backend)
    with db.sessions() as session:
        report = catch_up(session, root, {})
        assert _statuses(report) == [(_shown(first), "ingested"), (_shown(second), "ingested")]
        assert catch_up(session, root, {}).logs == []
    assert _count(db, IngestedLog.id) == 2
    db.dispose()


def test_catch_up_classifies_with_the_callers_config(tmp_path, backend):
    root, _, _, db = _two_logs(tmp_path, backend)
    cfg = {"error_handling": {"patterns": [{
        "id": "site_nfs", "pattern": "Stale file handle", "class": "ResourceError", "resource": "disk",
    }]}}  # fmt: skip
    with db.sessions() as session:
        found = [(f.error_type, f.pattern_id) for f in catch_up(session, root, cfg).failures]
    assert ("ResourceError", "site_nfs") in found
    db.dispose()


def test_catch_up_leaves_the_newest_log_to_the_live_run(tmp_path, backend, monkeypatch):
    root, first, second, db = _two_logs(tmp_path, backend)
    assert _asked(db, logs_to_catch_up, root) == [first, second]
    _live_run(monkeypatch, root)
    assert _asked(db, logs_to_catch_up, root) == [first]
    with db.sessions() as session:
        assert _statuses(catch_up(session, root, {})) == [(_shown(first), "ingested")]
    assert _asked(db, logs_to_catch_up, root) == []
    db.dispose()


def test_an_unfinished_or_unreadable_log_of_a_live_run_is_in_progress(
    tmp_path, backend, monkeypatch, logged
):
    root = _workdir(tmp_path, "killed_midrun")  # the log ends in the middle of the run
    (log,) = main_logs(root)
    garbage = log.with_name("2099-01-01T000000.000001.snakemake.log")
    garbage.write_bytes(GARBAGE)
    _live_run(monkeypatch, root)
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        report = ingest_logs(session, root, {})
    assert [(i.path, i.run_id, i.status, i.message) for i in report.logs] == [
        (_shown(log), "2026-11-28T153432.895977", "in-progress", "run in progress"),
        (_shown(garbage), "2099-01-01T000000.000001", "in-progress", "run in progress"),
    ]
    assert [(e["event"], e["log_level"], e["path"]) for e in logged if "path" in e] == [
        (SKIPPED_LIVE, "warning", _shown(log)), (SKIPPED_LIVE, "warning", _shown(garbage))
    ]
    assert _count(db, IngestedLog.id) == 0
    db.dispose()


def test_the_message_of_a_database_failure_names_what_was_committed():
    report = IngestReport([LogIngest(name, name[:1], status) for name, status in (
        ("a.log", "ingested"), ("b.log", "already-ingested"), ("c.log", "ingested"),
        ("d.log", "unreadable"),
    )])  # fmt: skip
    assert [item.path for item in report.with_status("unreadable")] == ["d.log"]
    tail = " (nothing of them was written). Fix the cause and run `neuroflow-recover ingest` " \
        "again: committed logs are skipped."  # fmt: skip
    assert not_committed_message("the disk is full", report, ["e.log", "f.log"]) == (
        "the disk is full. 2 log(s) ingested and committed before it (a.log, c.log), each in "
        "its own transaction; not committed: e.log and 1 more log(s)" + tail
    )
    assert not_committed_message("locked", IngestReport(report.logs[1:2]), ["e.log"]) == (
        "locked. 0 log(s) ingested and committed before it, each in its own transaction; "
        "not committed: e.log" + tail
    )


# ------------------------- a later success, unreadable logs, conflicts, database failures (in process)

KEEP_GOING = "keep_going_mixed"  # six jobs failed for good; shell_ok 02/2, shell_ok 01/1 and
# flaky_recover 01/1 (recovered on its 2nd attempt) succeeded, in that order


def _queued(session, rule: str, subject: str, failed_at: datetime, resolved_by=None,
            output=()) -> int:  # fmt: skip
    """An entry of `rule` for subject/session `subject` ("01/1"; "" for a job without
    wildcards, known by its `output`), failed at `failed_at`."""
    wildcards = dict(zip(("subject", "session"), subject.split("/"), strict=True)) if subject \
        else {}  # fmt: skip
    failure = JobFailure(
        rule=rule, wildcards=wildcards, pipeline_name=rule, error_type="TransientError",
        retryable=True, error_message="", events=[], failed_at=failed_at,
        error_details={"output": list(output)},
    )  # fmt: skip
    entry = dead_letter(session, failure)
    if resolved_by:
        mark_resolved(entry, resolved_by, "fixed by hand")
    return entry.id


def _finished(run_log: RunLog) -> dict[str, datetime]:
    return {
        job_key(job.rule, job.wildcards, job.output): local_as_utc(job.finished_at)
        for job in run_log.succeeded
    }


def test_a_success_closes_only_the_open_entries_that_failed_before_it(tmp_path, backend, logged):
    root = _workdir(tmp_path, KEEP_GOING)
    (log,) = main_logs(root)
    run_log = parse_log(log)
    finished = _finished(run_log)
    flaky = finished["flaky_recover/session-1_subject-01"]
    db = open_database(backend.url(), root)
    with db.sessions.begin() as session:
        ids = [
            # resolved before: left as it is
            _queued(session, "shell_ok", "02/2", flaky - timedelta(hours=1), "operator"),
            # failed when the job succeeded (the run ended later): proves nothing
            _queued(session, "shell_ok", "01/1", finished["shell_ok/session-1_subject-01"]),
            _queued(session, "flaky_recover", "01/1", flaky - timedelta(seconds=1)),
        ]
    with db.sessions() as session:
        report = ingest_logs(session, root, {})
    (item,) = report.logs
    assert (item.status, item.resolved_ids, report.to_dict()["resolved_ids"]) == (
        "ingested", [ids[2]], [ids[2]]
    )
    assert item.run_errors == ["WorkflowError:\nAt least one job did not complete successfully."]
    assert item.recovered == ["flaky_recover/session-1_subject-01 (jobid 7, 2 attempts)"]
    with db.sessions() as session:
        rows = {
            e.id: (e.resolved, e.resolved_by, e.resolution_notes)
            for e in session.scalars(select(DeadLetterEntry).where(DeadLetterEntry.id.in_(ids)))
        }
        (ingested,) = session.scalars(select(IngestedLog))
        row = (ingested.path, ingested.sha256, ingested.size, ingested.run_id,
               ingested.n_failed, ingested.host)  # fmt: skip
    assert row == (_shown(log), *file_digest(log), run_log.run_id, 6, socket.gethostname())
    assert rows == {
        ids[0]: (True, "operator", "fixed by hand"),
        ids[1]: (False, None, None),
        ids[2]: (True, "snakemake", f"the job succeeded in Snakemake run {run_log.run_id} "
                 f"(log {_shown(log)}, finished {flaky.isoformat(timespec='seconds')})"),
    }  # fmt: skip
    assert [(e["event"], e["log_level"], e["entry_id"], e["log"]) for e in logged if "log" in e] == [
        ("resolved: the job succeeded in a later run", "info", ids[2], _shown(log))
    ]
    db.dispose()


def test_a_success_without_its_own_time_counts_from_the_runs_end(tmp_path, backend):
    root = _workdir(tmp_path, "success")  # shell_ok 01/1 finished at 15:34:20, the run .22 later
    run_log = parse_log(main_logs(root)[0])
    (job,) = run_log.succeeded
    ended = local_as_utc(run_log.finished_at)
    untimed = replace(run_log, succeeded=[replace(job, finished_at=None)])
    key = "shell_ok/session-1_subject-01"
    db = open_database(backend.url(), root)
    with db.sessions.begin() as session:
        entry_id = _queued(session, "shell_ok", "01/1", local_as_utc(job.finished_at)
                           + (ended - local_as_utc(job.finished_at)) / 2)  # fmt: skip
        assert close_succeeded(session, run_log, "a.log") == []  # its own time: before
        assert close_succeeded(session, replace(untimed, finished_at=None), "a.log") == []
        assert close_succeeded(session, untimed, "a.log", leave_open=[key]) == []
        assert close_succeeded(session, untimed, "a.log") == [entry_id]
        # a job without wildcards is known by its output
        by_output = _queued(session, "shell_ok", "", ended - timedelta(hours=1),
                            output=["results/ok.txt"])  # fmt: skip
        unnamed = replace(job, wildcards={}, output=["results/ok.txt", "results/more.txt"])
        assert close_succeeded(session, replace(run_log, succeeded=[unnamed]), "a.log") == [
            by_output
        ]
        entry = session.get(DeadLetterEntry, entry_id)
        assert (entry.resolved_by, entry.resolution_notes) == ("snakemake", (
            f"the job succeeded in Snakemake run {run_log.run_id} (log a.log, "
            f"finished {ended.isoformat(timespec='seconds')})"))  # fmt: skip
    db.dispose()


def test_logs_that_cannot_be_read_or_were_ingested_before_are_skipped(tmp_path, backend, logged):
    root = _workdir(tmp_path, "stale_handle")
    (log,) = main_logs(root)
    folder = log.with_name("2026-01-01T000000.000001.snakemake.log")
    folder.mkdir()
    broken = log.with_name("2026-01-01T000000.000002.snakemake.log")
    broken.symlink_to("/proc/self/mem")  # a regular file whose reading fails (EIO)
    with pytest.raises(OSError) as error:
        file_digest(broken)
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        report = ingest_logs(session, root, {}, [folder, broken, log, log])
    unreadable = "not a regular file (a directory)"
    assert [(i.path, i.run_id, i.status, i.message) for i in report.logs] == [
        (_shown(folder), "2026-01-01T000000.000001", "unreadable", unreadable),
        (_shown(broken), "2026-01-01T000000.000002", "unreadable", str(error.value)),
        (_shown(log), "2026-11-28T153158.087922", "ingested", ""),
        (_shown(log), "2026-11-28T153158.087922", "already-ingested", ""),
    ]
    assert [(e["event"], e["log_level"], e["path"], e.get("error")) for e in logged
            if "path" in e] == [
        ("cannot read log, skipped", "warning", _shown(folder), unreadable),
        ("cannot read log, skipped", "warning", _shown(broken), str(error.value)),
        ("log already ingested", "info", _shown(log), None),
    ]  # fmt: skip
    db.dispose()


STALE_KEY = "shell_stalehandle/session-1_subject-01"  # stale_handle: failed twice


def _conflicting(session, conflicts: int, calls: list, raised: list):
    """A `hold` whose first `conflicts` calls add an ingested log with a sha256 already in
    the transaction (a unique-key conflict, as another writer's row would give)."""

    def hold(failure: JobFailure) -> bool:
        calls.append(failure.job_key)
        if len(calls) <= conflicts:
            session.add_all([IngestedLog(path=name, sha256="0" * 64, size=0, run_id=name)
                             for name in ("a.log", "b.log")])  # fmt: skip
            try:
                session.flush()
            except IntegrityError as exc:
                raised.append(exc)
                raise
        return False

    return hold


def _conflict_events(logged) -> list[tuple]:
    return [(e["event"], e["log_level"], e["path"], e["attempt"], e["error"])
            for e in logged if "attempt" in e]  # fmt: skip


def test_a_conflict_runs_the_logs_transaction_again(tmp_path, backend, logged):
    root = _workdir(tmp_path, "stale_handle")
    (log,) = main_logs(root)
    earlier = AttemptEvent(event_key="retry:round-1", source="retry", run_id="round-1",
                           error_type="TransientError")  # fmt: skip
    calls, raised = [], []
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        result = ingest_one(session, IngestContext.build(root, {}), log,
                            hold=_conflicting(session, 1, calls, raised),
                            carried={STALE_KEY: [earlier]})  # fmt: skip
    assert (result.status, calls, len(raised)) == ("ingested", [STALE_KEY, STALE_KEY], 1)
    assert _conflict_events(logged) == [
        ("conflict with another writer, ingesting the log again", "info", str(log), 1,
         str(raised[0].orig)),
    ]  # fmt: skip
    (failure,) = result.failures
    assert [e.source for e in failure.events] == ["retry", "snakemake-log", "snakemake-log"]
    with db.sessions() as session:
        (entry,) = session.scalars(select(DeadLetterEntry))
        history = [h["source"] for h in entry_details(entry)["history"]]
        logs = session.scalars(select(IngestedLog.path)).all()
    assert (result.entry_ids, history, logs) == (
        [entry.id], ["retry", "snakemake-log", "snakemake-log"], [_shown(log)]
    )
    db.dispose()


def test_a_conflict_on_every_try_or_another_database_error_is_raised(tmp_path, backend, logged):
    root = _workdir(tmp_path, "stale_handle")
    (log,) = main_logs(root)
    context = IngestContext.build(root, {})
    calls, raised = [], []
    db = open_database(backend.url(), root)
    with db.sessions() as session, pytest.raises(IntegrityError) as error:
        ingest_one(session, context, log, hold=_conflicting(session, 3, calls, raised))
    assert (error.value, len(calls)) == (raised[-1], 3)
    assert [event[3] for event in _conflict_events(logged)] == [1, 2]

    def broken(failure: JobFailure) -> bool:
        calls.append(failure.job_key)
        session.execute(text("SELECT * FROM no_such_table"))
        return False

    calls.clear()
    with db.sessions() as session, pytest.raises(DBAPIError) as error:
        ingest_one(session, context, log, hold=broken)
    assert (is_conflict(error.value), len(calls)) == (False, 1)
    assert _count(db, IngestedLog.id) == 0
    db.dispose()


def test_a_database_failure_in_a_batch_names_what_was_committed(tmp_path, backend):
    root = _workdir(tmp_path, "success", "stale_handle", "memory_error")
    memory, stale, success = main_logs(root)
    db = open_database(backend.url(), root)
    with db.engine.begin() as conn:  # the failed jobs' history cannot be written
        conn.execute(text("DROP TABLE attempt_history"))
    with db.sessions() as session, pytest.raises(DatabaseUnavailable) as error:
        ingest_logs(session, root, {}, [success, stale, memory])
    reason = describe_failure(error.value.__cause__, db.engine)
    assert "attempt_history" in reason
    assert str(error.value) == (
        f"{reason}. 1 log(s) ingested and committed before it ({_shown(success)}), each in its "
        f"own transaction; not committed: {_shown(stale)} and 1 more log(s) (nothing of them "
        "was written). Fix the cause and run `neuroflow-recover ingest` again: committed logs "
        "are skipped."
    )
    assert _count(db, IngestedLog.id) == 1
    db.dispose()


def test_the_batch_classifies_and_notifies_with_the_callers_config_and_invocation(
    tmp_path, backend
):
    """Only new entries are announced: python_memoryerror 01/1 was queued before."""
    root = _workdir(tmp_path, "memory_error", "stale_handle")
    cfg = {"error_handling": {
        "patterns": [{"id": "site_nfs", "pattern": "Stale file handle", "class": "ResourceError",
                      "resource": "disk"}],
        "notifications": {"slack_webhook": "http://127.0.0.1:9/hook"},
    }}  # fmt: skip
    db = open_database(backend.url(), root)
    with db.sessions.begin() as session:
        queued = _queued(session, "python_memoryerror", "01/1", datetime(2026, 1, 1, tzinfo=UTC))
    with db.sessions() as session:
        report = ingest_logs(session, root, cfg, invocation={"configfiles": ["site.yaml"]})
    extended, stale = report.failures
    assert (stale.error_type, stale.resource, stale.pattern_id) == (
        "ResourceError", "disk", "site_nfs"
    )
    memory_log, stale_log = report.logs  # the extended entry is listed once
    assert (memory_log.entry_ids, stale_log.entry_ids) == ([queued], report.entry_ids[1:])
    command = shlex.join(["neuroflow-recover", "-d", str(root.absolute()),
                          "--configfile", "site.yaml"])  # fmt: skip
    with db.sessions() as session:
        (notification,) = session.scalars(select(Notification))
    assert (notification.entry_ids, f"{command} retry {report.entry_ids[1]}" in notification.text
            ) == (report.entry_ids[1:], True)  # fmt: skip
    db.dispose()


def test_each_failure_gets_its_own_copy_of_the_runs_invocation(tmp_path):
    run_log = parse_log(main_logs(_workdir(tmp_path, "stale_handle"))[0])
    context = IngestContext.build(tmp_path, {})
    first = build_failure(context, run_log, run_log.failed_jobs[0])
    assert first.invocation["snakemake_args"] == ["-c1", "--retries", "1"]  # the log's header
    first.invocation["snakemake_args"].append("--dry-run")  # e.g. by a retry planning
    assert build_failure(context, run_log, run_log.failed_jobs[0]).invocation["snakemake_args"] \
        == ["-c1", "--retries", "1"]  # fmt: skip


# --------------------------------- classification and history of one job, from its records or the log


def _events_of(failure: JobFailure) -> list[tuple]:
    return [(e.event_key.rsplit(":", 1)[-1], e.exit_code, e.error_type, e.pattern_id, e.slurm_job_id,
             e.slurm_state) for e in failure.events]  # fmt: skip


def test_earlier_attempts_are_classified_from_their_job_blocks(tmp_path):
    """Attempts without a record: an earlier one by its own block's message, printed lines,
    exit code and SLURM state; the last one is the failure itself."""
    root = _workdir(tmp_path, KEEP_GOING)
    run_log = parse_log(main_logs(root)[0])
    context = IngestContext.build(root, {})
    jobs = {job.rule: job for job in run_log.failed_jobs}
    by_message, by_exit_code = jobs["always_fail"], jobs["python_memoryerror"]
    failure = build_failure(context, run_log, by_message)
    heudiconv = ("ValidationError", "heudiconv_conflicting_study", None, None)
    assert _events_of(failure) == [("1", 1, *heudiconv), ("2", 1, *heudiconv),
                                   ("3", 1, failure.error_type, failure.pattern_id, None, None)]
    blocks = by_message.attempt_details
    assert [(e.started_at, e.ended_at) for e in failure.events] == [
        (local_as_utc(b.started_at), local_as_utc(b.ended_at)) for b in blocks[:2]
    ] + [(local_as_utc(blocks[2].started_at), failure.failed_at)]
    assert [e.resources["mem_mb"] for e in failure.events] == [100, 200, 300]  # each block's
    assert _events_of(build_failure(context, run_log, by_exit_code))[0] == (
        "1", 1, "NonRetryableError", "exit:1", None, None
    )
    # what it printed counts as much as its message, and so does its SLURM state
    first = replace(by_exit_code.attempt_details[0], printed=STALE)
    printed = replace(by_exit_code, attempt_details=[first, by_exit_code.attempt_details[1]])
    event = build_failure(context, run_log, printed).events[0]
    assert (event.error_type, event.pattern_id, event.evidence) == (
        "TransientError", "stale_nfs", STALE
    )
    timed_out = replace(first, printed="", exit_code=None, slurm_state="TIMEOUT",
                        slurm_job_id="41")  # fmt: skip
    slurm = replace(by_exit_code, attempt_details=[timed_out, by_exit_code.attempt_details[1]])
    assert _events_of(build_failure(context, run_log, slurm))[0] == (
        "1", None, "ResourceError", "slurm:TIMEOUT", "41", "TIMEOUT"
    )


def test_attempts_without_job_blocks_take_the_jobs_resources_and_slurm_ids(tmp_path):
    """A log that printed no job blocks: attempt 1 from the job's SLURM ids and resources,
    attempt 2 from its record; the one without a start time comes first."""
    root = _workdir(tmp_path, TRAP)
    start = _trap_start(root)
    record = _record(2, start + timedelta(seconds=60), exit_code=1, error_class="TransientError",
                     retryable=True, pattern_id="stale_nfs", evidence=STALE)  # fmt: skip
    write_record(root, record)
    run_log = parse_log(main_logs(root)[0])
    job = replace(run_log.failed_jobs[0], attempt_details=[])
    failure = build_failure(IngestContext.build(root, {}), run_log, job)
    first, second = failure.events
    assert (first.source, first.started_at, first.ended_at, first.slurm_job_id, first.slurm_state,
            first.error_type, first.resources["mem_mb"], first.resources["attempt"]) == (
        "snakemake-log", None, None, "30", None, "RetryableError", 200, 2
    )  # fmt: skip
    assert (second.source, second.slurm_job_id, second.slurm_state) == (
        "attempt-record", "38", "FAILED"
    )
    # the job's list of SLURM ids lacks the first: its job block names it
    one_id = replace(run_log.failed_jobs[0], slurm_job_ids=["38"])
    events = build_failure(IngestContext.build(root, {}), run_log, one_id).events
    assert [(e.source, e.slurm_job_id) for e in events] == [
        ("snakemake-log", "30"), ("attempt-record", "38")
    ]


def test_the_last_record_that_ran_classifies_the_job_and_gives_its_output_tail(tmp_path):
    root = _workdir(tmp_path, TRAP)
    start = _trap_start(root)
    for record in (
        _record(1, start + timedelta(seconds=10), exit_code=137, error_class="ResourceError",
                retryable=True, resource="mem_mb", pattern_id="oom_kill", evidence="Killed",
                tail=["first"], log="logs/probe_trap/01_1.attempt-1.log"),
        _record(2, start + timedelta(seconds=30), skipped=True, tail=["not starting probe_trap"]),
        _record(2, start + timedelta(seconds=40), exit_code=75, error_class="TransientError",
                retryable=True, resource="runtime", pattern_id="stale_nfs", evidence=STALE,
                tail=["last"]),
        _record(3, start + timedelta(seconds=50), deferred=True, tail=["deferred: ran nothing"]),
    ):  # fmt: skip
        write_record(root, record)
    run_log = parse_log(main_logs(root)[0])
    failure = build_failure(IngestContext.build(root, {}), run_log, run_log.failed_jobs[0])
    assert (failure.error_type, failure.retryable, failure.resource, failure.pattern_id,
            failure.evidence, failure.exit_code, failure.error_details["tail"]) == (
        "TransientError", True, "runtime", "stale_nfs", STALE, 75, ["last"]
    )  # fmt: skip
    assert failure.log_paths == [
        _shown(main_logs(root)[0]), "logs/probe_trap/01_1.log", run_log.failed_jobs[0].slurm_log,
        "logs/probe_trap/01_1.attempt-1.log",
    ]  # fmt: skip
    assert [(e.source, e.error_type) for e in failure.events] == [
        ("attempt-record", "ResourceError"), ("attempt-record", "skipped"),
        ("attempt-record", "TransientError"),
    ]  # fmt: skip


def test_evidence_that_cannot_be_read_leaves_the_main_logs_message(tmp_path, monkeypatch, logged):
    def unreadable(job, workdir):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ingest, "read_evidence", unreadable)
    context = _context(tmp_path)
    failure = build_failure(context, _run_log(), _job(message=STALE))
    assert (failure.error_type, failure.pattern_id, failure.evidence) == (
        "TransientError", "stale_nfs", STALE
    )
    assert [(e["event"], e["log_level"], e["rule"], e["error"]) for e in logged] == [
        ("cannot read evidence", "warning", "qsiprep_preprocess", "[Errno 5] Input/output error")
    ]
    out_of_memory = build_failure(context, _run_log(), _job(slurm_state="OUT_OF_MEMORY"))
    assert (out_of_memory.error_type, out_of_memory.pattern_id) == (
        "ResourceError", "slurm:OUT_OF_MEMORY"
    )


def test_the_window_of_a_run_without_a_start_or_an_end(tmp_path):
    """Records count from 5 s before the run's start to 5 s after its end; without an end,
    until the job failed, else the log's modification time, else now."""
    job = _job(failed_at=datetime(2020, 1, 2, 10, 40, tzinfo=UTC))
    times = ["", "2020-01-02T09:59:55+00:00", "2020-01-02T10:00:01+00:00",
             "2020-01-02T10:50:00+00:00", "2020-01-02T10:59:59+00:00",
             "2020-01-02T11:00:05+00:00", "2020-01-02T11:00:06+00:00"]  # fmt: skip
    _write_records(tmp_path, job, times)
    run = _run_log(started_at=datetime(2020, 1, 2, 10, tzinfo=UTC),
                   finished_at=datetime(2020, 1, 2, 11, tzinfo=UTC))  # fmt: skip

    def window(run_log, failed_job=job) -> list[str]:
        return [r.started_at for r in _records_in_window(tmp_path, failed_job, run_log)]

    assert window(run) == times[1:6]
    assert window(replace(run, finished_at=None)) == times[1:3]  # until the job failed
    log = tmp_path / "run.log"
    log.write_text("")
    os.utime(log, (0, datetime(2020, 1, 2, 10, 50, tzinfo=UTC).timestamp()))
    unknown = replace(run, started_at=None, finished_at=None, path=str(log))
    assert window(unknown, replace(job, failed_at=None)) == times[1:4]  # until its mtime
    gone = replace(unknown, path=str(tmp_path / "gone.log"))
    assert window(gone, replace(job, failed_at=None)) == times[1:]  # until now


def test_the_end_handler_ingests_its_runs_log_while_the_lock_is_still_held(
    tmp_path, backend, monkeypatch
):
    root = _workdir(tmp_path, "killed_midrun")  # the log ends in the middle of the run
    _live_run(monkeypatch, root)
    db = open_database(backend.url(), root)
    with db.sessions() as session, session.begin():
        context, log = IngestContext.build(root, {}), main_logs(root)[0]
        assert ingest_log(session, context, log).status == "in-progress"
        result = ingest_log(session, context, log, run_ended=True)
    assert (result.status, result.run_id, result.failures) == (
        "ingested", "2026-11-28T153432.895977", []
    )
    assert _count(db, IngestedLog.id) == 1
    db.dispose()


def test_a_success_leaves_the_entries_retry_decides_about_open(tmp_path, backend):
    root = _workdir(tmp_path, "success")  # shell_ok 01/1 succeeded
    db = open_database(backend.url(), root)
    with db.sessions() as session, session.begin():
        queued = _queued(session, "shell_ok", "01/1", datetime(2026, 1, 1, tzinfo=UTC))
        result = ingest_log(session, IngestContext.build(root, {}), main_logs(root)[0],
                            leave_open=["shell_ok/session-1_subject-01"])  # fmt: skip
        assert (result.resolved_ids, session.get(DeadLetterEntry, queued).resolved) == ([], False)
    db.dispose()


def test_a_log_longer_than_a_hash_chunk_is_digested_whole(tmp_path):
    path = tmp_path / "big.snakemake.log"
    data = bytes(range(256)) * (2 * ingest.HASH_CHUNK // 256 + 3)
    path.write_bytes(data)
    assert file_digest(path) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_file_that_is_no_snakemake_log_is_unreadable_and_each_dead_letter_is_logged(
    tmp_path, backend, logged
):
    root = _workdir(tmp_path, "stale_handle")
    (log,) = main_logs(root)
    garbage = log.with_name("2026-01-01T000000.000001.snakemake.log")
    garbage.write_bytes(b"\x00\x01 not a log\n")
    with pytest.raises(LogFormatError) as error:
        parse_log(garbage)
    db = open_database(backend.url(), root)
    with db.sessions() as session:
        report = ingest_logs(session, root, {}, [garbage, log])
    assert [(i.path, i.run_id, i.status, i.message) for i in report.logs][0] == (
        _shown(garbage), "2026-01-01T000000.000001", "unreadable", str(error.value))  # fmt: skip
    (entry_id,) = report.logs[1].entry_ids
    assert [{k: e.get(k) for k in ("event", "log_level", "path", "error")} for e in logged
            if e.get("path") == _shown(garbage)] == [  # fmt: skip
        {"event": "not a Snakemake log we can read, skipped", "log_level": "warning",
         "path": _shown(garbage), "error": str(error.value)}]  # fmt: skip
    assert [(e["event"], e["log_level"], e["entry_id"], e["rule"], e["wildcards"],
             e["error_type"], e["attempts"]) for e in logged if e["event"] == "dead-lettered"] == [
        ("dead-lettered", "warning", entry_id, "shell_stalehandle",
         {"session": "1", "subject": "01"}, "TransientError", 2)]  # fmt: skip
    db.dispose()
