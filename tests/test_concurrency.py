"""Real `neuroflow-recover` processes on one database, on SQLite and on PostgreSQL: parallel
ingesters, writers waiting for an ingest's lock, kill -9 mid-transaction and at random moments.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backends import Backend, create_pg_database, drop_pg_database, require_pg
from dlq_workflows import behave, main_logs, make_toy_workflow, snakemake
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry, IngestedLog

pytestmark = pytest.mark.workflow

JOBS = [("01", "1"), ("01", "2"), ("02", "1"), ("02", "2")]
MESSAGES = [
    "MemoryError",
    "OSError: [Errno 116] Stale file handle",
    "Error: Unable to find any DICOM images in d (or subfolders 5 deep)",
    "ERROR: FreeSurfer license file /opt/freesurfer/license.txt not found.",
]
KILLS = 10


@pytest.fixture(scope="module")
def three_logs(tmp_path_factory) -> Path:
    """A toy workflow whose 4 jobs fail in each of 3 runs: 3 logs, 12 failures, 4 jobs."""
    root = make_toy_workflow(tmp_path_factory.mktemp("conc") / "wf", JOBS)
    for (subject, session), message in zip(JOBS, MESSAGES):
        behave(root, subject, session, f"until|never|1|{message}")
    for _ in range(3):
        assert snakemake(root, "--keep-going").returncode != 0
    assert len(main_logs(root)) == 3
    return root


@pytest.fixture(scope="module")
def sequential(three_logs, tmp_path_factory) -> tuple:
    """What one sequential ingest of the three logs gives (the reference)."""
    root = tmp_path_factory.mktemp("seq") / "wf"
    shutil.copytree(three_logs, root)
    process = _start(root, Backend("sqlite"))
    assert process.wait(timeout=600) == 0
    return _content(root, Backend("sqlite"))


def _start(root: Path, backend: Backend, *args: str, pause: Path | None = None,
           command: str = "ingest", env: dict | None = None) -> subprocess.Popen:  # fmt: skip
    """`neuroflow-recover COMMAND`; with `pause`, waiting inside a log's transaction."""
    full_env = dict(os.environ)
    full_env.pop("NEUROFLOW_DB", None)
    full_env.update(backend.env() | (env or {}))
    program = ["-m", "neuroflow_recover.cli"]
    if pause is not None:
        program = [str(Path(__file__).with_name("paused_ingest.py")), str(pause)]
    return subprocess.Popen(
        [sys.executable, *program, "-d", str(root), command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def _content(root: Path, backend: Backend) -> tuple:
    """The queue by job (ids aside), after checking its integrity."""
    db = open_database(backend.url(), root, create=False)
    check_integrity(db)
    with db.sessions() as session:
        entries = sorted(
            (e.job_key, e.attempts, e.error_type, e.resolved,
             tuple(sorted(h.event_key for h in e.history)))  # fmt: skip
            for e in session.scalars(select(DeadLetterEntry))
        )
        logs = sorted(session.scalars(select(IngestedLog.sha256)))
    db.dispose()
    return entries, logs


def check_integrity(db) -> None:
    """The file is sound (SQLite) and the queue's invariants hold (both backends)."""
    with db.sessions() as session:
        if db.path is not None:
            assert session.connection().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert session.connection().exec_driver_sql("PRAGMA foreign_key_check").all() == []
        for entry in session.scalars(select(DeadLetterEntry)):
            assert [h.attempt for h in entry.history] == list(range(1, entry.attempts + 1))
        open_keys = list(
            session.scalars(select(DeadLetterEntry.job_key).where(DeadLetterEntry.resolved.is_(False)))
        )
        assert len(open_keys) == len(set(open_keys))
        keys = list(session.scalars(select(AttemptHistory.event_key)))
        assert len(keys) == len(set(keys))


def _ok(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "locked" not in err.lower(), err
    return out


def test_eight_parallel_ingesters_on_a_fresh_database_equal_one_sequential_ingest(
    three_logs, sequential, tmp_path, backend
):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    logs = [str(p) for p in main_logs(root)]
    orders = [[], logs, list(reversed(logs)), [], logs[1:] + logs[:1], logs[:1], logs[2:], []]
    processes = [_start(root, backend, *order) for order in orders]  # no database yet
    for process in processes:
        _ok(process)
    assert _content(root, backend) == sequential
    assert sequential[0] and all(attempts == 3 for _, attempts, *_ in sequential[0])


def test_kill_9_inside_the_transaction_leaves_the_database_consistent(
    three_logs, sequential, tmp_path, backend
):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    first, second, third = main_logs(root)
    _ok(_start(root, backend, str(first)))
    after_first = _content(root, backend)
    assert len(after_first[0]) == 4 and len(after_first[1]) == 1

    flag = tmp_path / "paused"
    victim = _start(root, backend, str(second), str(third), pause=flag)
    _wait_for(flag, victim)  # the process is now inside the second log's transaction
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    assert _content(root, backend) == after_first  # nothing of the killed transaction
    _ok(_start(root, backend))
    assert _content(root, backend) == sequential


def test_kill_9_at_random_moments_then_a_rerun_completes(three_logs, sequential, tmp_path, backend):
    """Each round: a fresh database, an ingest killed at a seeded random moment (start-up,
    parsing, inside a transaction or after it), the integrity checked, a re-run completes."""
    rng = random.Random(14)
    for round_number in range(KILLS):
        root = tmp_path / f"wf{round_number}"
        shutil.copytree(three_logs, root)
        target = _fresh(backend, root)
        victim = _start(root, target)
        time.sleep(rng.uniform(0.3, 2.5))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        try:
            db = open_database(target.url(), root, create=False)
            check_integrity(db)
            db.dispose()
        except Exception as exc:  # killed before the database was made: nothing to check
            assert "no dead-letter database" in str(exc), exc
        _ok(_start(root, target))
        assert _content(root, target) == sequential, f"round {round_number}"
        _drop(backend, target)


def test_resolves_and_a_retry_while_an_ingest_holds_the_lock_all_succeed(
    three_logs, tmp_path, backend
):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    first, second, third = main_logs(root)
    _ok(_start(root, backend, str(first)))
    # four more failed jobs (8 in all), one to be retried successfully while the ingest
    # holds the lock, the other 7 entries to be resolved meanwhile
    more = [("03", "1"), ("03", "2"), ("04", "1"), ("04", "2")]
    for subject, session in more:
        behave(root, subject, session, "until|fixed|1|MemoryError")
    (root / "jobs.txt").write_text(
        (root / "jobs.txt").read_text() + "".join(f"{s} {t}\n" for s, t in more)
    )
    targets = [f"results/{s}/{t}.txt" for s, t in more]
    run = _start(root, backend, "--", "--cores", "1", "--keep-going", *targets, command="run")
    assert run.wait(timeout=600) == 1, run.communicate()
    (root / "fixed").write_text("")
    db = open_database(backend.url(), root, create=False)
    with db.sessions() as session:
        ids = dict(session.execute(select(DeadLetterEntry.job_key, DeadLetterEntry.id)).all())
    db.dispose()
    retried = ids.pop("toy_step/session-1_subject-03")

    flag, release = tmp_path / "paused", tmp_path / "release"
    ingest = _start(root, backend, str(second), str(third), pause=flag,
                    env={"PAUSE_RELEASE": str(release)})  # fmt: skip
    _wait_for(flag, ingest)  # the ingest holds the write lock from here on
    writers = [_start(root, backend, str(entry_id), "--notes", "x", command="resolve")
               for entry_id in ids.values()]  # fmt: skip
    writers += [_start(root, backend, str(retried), command="retry")]
    time.sleep(1.0)  # let them reach the lock (not an assertion: they wait however long)
    release.write_text("")
    _ok(ingest)
    for writer in writers:
        _ok(writer)
    assert len(writers) == 8
    db = open_database(backend.url(), root, create=False)
    check_integrity(db)
    with db.sessions() as session:
        entries = {e.id: e for e in session.scalars(select(DeadLetterEntry))}
        assert {entries[i].resolved_by for i in ids.values()} == {os.environ.get("USER") or
                                                                  _user()}  # fmt: skip
        assert entries[retried].resolved_by == "retry"
        assert session.scalar(select(func.count(IngestedLog.id))) == 5  # 3 + run + retry
    db.dispose()


def _user() -> str:
    import getpass

    return getpass.getuser()


def _wait_for(flag: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not flag.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "ingest never reached the pause"
        time.sleep(0.05)


def _fresh(backend: Backend, root: Path) -> Backend:
    if backend.name == "sqlite":
        return Backend("sqlite")
    return Backend("postgresql", create_pg_database(require_pg()))


def _drop(backend: Backend, target: Backend) -> None:
    if target.pg_url and target.pg_url != backend.pg_url:
        drop_pg_database(require_pg(), target.pg_url)
