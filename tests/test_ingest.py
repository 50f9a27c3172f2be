"""Ingesting real Snakemake logs into the dead-letter queue (idempotent, classified, robust)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from dlq_workflows import behave, main_logs, make_toy_workflow, recover, snakemake
from helpers import VENV_BIN
from neuroflow_recover.errors import LogFormatError
from neuroflow_recover.logs.parser import parse_log
from neuroflow_recover.logs.records import FailedJob, JobAttempt, RunLog
from neuroflow_recover.queue import ingest
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import AttemptEvent, entry_details
from neuroflow_recover.queue.ingest import (
    IngestContext,
    IngestReport,
    LogIngest,
    _record_event,
    build_failure,
    catch_up,
    file_digest,
    ingest_live,
    ingest_logs,
    logs_to_catch_up,
    not_committed_message,
    pending_logs,
)
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry, IngestedLog
from neuroflow_recover.step.attempts import AttemptRecord, write_record
from neuroflow_recover.times import local_as_utc
from neuroflow_recover.workflow.config import load_config, validate_config
from neuroflow_recover.workflow.layout import final_targets
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


def test_only_the_attempt_records_of_the_runs_time_window_classify_the_job(tmp_path):
    context, job = _context(tmp_path), _job()
    records = [
        ("2026-01-01T10:30:00+00:00", "ConfigurationError"),  # a run before
        ("2026-01-02T10:30:00+00:00", "TransientError"),  # this run
        ("2026-01-03T10:30:00+00:00", "ResourceError"),  # a run after
    ]
    for started, error in records:
        write_record(tmp_path, AttemptRecord(
            rule=job.rule, stage="qsiprep", wildcards=job.wildcards, attempt=1,
            started_at=started, ended_at=started, exit_code=1, error_class=error,
            retryable=True, resource=None, pattern_id=None, evidence=error,
        ))  # fmt: skip
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
