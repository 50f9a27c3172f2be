"""Several real `neuroflow-recover ingest` processes on one database; kill -9 mid-transaction."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

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


def _start(root: Path, *args: str, pause: Path | None = None) -> subprocess.Popen:
    """`neuroflow-recover ingest`; with `pause`, waiting inside each log's transaction."""
    full_env = dict(os.environ)
    full_env.pop("NEUROFLOW_DB", None)
    program = ["-m", "neuroflow_recover.cli"]
    if pause is not None:
        program = [str(Path(__file__).with_name("paused_ingest.py")), str(pause)]
    return subprocess.Popen(
        [sys.executable, *program, "-d", str(root), "ingest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def _counts(root: Path) -> tuple[int, int, int]:
    db = open_database(None, root, create=False)
    with db.sessions() as session:
        counts = (
            session.scalar(select(func.count(DeadLetterEntry.id))),
            session.scalar(select(func.count(AttemptHistory.id))),
            session.scalar(select(func.count(IngestedLog.id))),
        )
        attempts = sorted(session.scalars(select(DeadLetterEntry.attempts)))
        keys = list(session.scalars(select(AttemptHistory.event_key)))
    db.dispose()
    assert len(keys) == len(set(keys))
    return counts + (tuple(attempts),)


def test_parallel_ingest_processes_neither_fail_nor_duplicate(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    logs = [str(p) for p in main_logs(root)]
    orders = [[], logs, list(reversed(logs)), [], logs[1:] + logs[:1], []]
    processes = [_start(root, *order) for order in orders]  # the database does not exist yet
    results = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err
        assert "locked" not in err.lower(), err
        assert "Traceback" not in err
    assert _counts(root) == (4, 12, 3, (3, 3, 3, 3))


def test_kill_9_inside_the_transaction_leaves_the_database_consistent(three_logs, tmp_path):
    root = tmp_path / "wf"
    shutil.copytree(three_logs, root)
    first, second, third = main_logs(root)
    done = _start(root, str(first))
    assert done.wait(timeout=600) == 0
    after_first = _counts(root)
    assert after_first[:3] == (4, 4, 1)

    flag = tmp_path / "paused"
    victim = _start(root, str(second), str(third), pause=flag)
    deadline = time.monotonic() + 300
    while not flag.exists():  # the process is now inside the second log's transaction
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "ingest never reached the pause"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    assert _counts(root) == after_first  # nothing of the killed transaction is visible
    rerun = _start(root)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert _counts(root) == (4, 12, 3, (3, 3, 3, 3))
