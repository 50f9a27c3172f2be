"""Ingesting real Snakemake logs into the dead-letter queue (idempotent, classified, robust)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dlq_workflows import behave, main_logs, make_toy_workflow, recover, snakemake
from helpers import VENV_BIN
from neuroflow_recover.logs.records import FailedJob, JobAttempt, RunLog
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import entry_details
from neuroflow_recover.queue.ingest import IngestContext, build_failure, file_digest, ingest_logs
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry, IngestedLog
from neuroflow_recover.step.attempts import AttemptRecord, write_record
from neuroflow_recover.workflow.config import load_config, validate_config
from neuroflow_recover.workflow.layout import final_targets
from neuroflow_recover.workflow.sheet import load_sessions

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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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


@pytest.mark.workflow
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
