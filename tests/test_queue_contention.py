"""A writer that cannot get the database's lock in time: a clear message, exit 1, and a retry
that already ran Snakemake keeps its outcome (recorded by the next command). Both backends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dlq_workflows import behave, make_toy_workflow, recover
from neuroflow_recover.queue.database import PG_WRITER_LOCK
from neuroflow_recover.recover.outcomes import PENDING_DIR

pytestmark = pytest.mark.workflow


@contextlib.contextmanager
def writer_lock(root: Path, backend):
    """Hold the database's write lock like a long writing transaction of another process."""
    if backend.pg_url:
        engine = create_engine(backend.pg_url)
        with engine.connect() as conn:
            conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_WRITER_LOCK})"))
            yield
            conn.rollback()
        engine.dispose()
        return
    conn = sqlite3.connect(root / ".neuroflow" / "neuroflow.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _shown(root: Path, backend) -> str:
    """How messages name the database."""
    return backend.pg_url or str((root / ".neuroflow" / "neuroflow.db").absolute())


def _where(root: Path, backend) -> str:
    return re.escape(_shown(root, backend))


@pytest.fixture
def failed(tmp_path, backend) -> Path:
    """A toy workflow whose job 01/1 failed in a `run`: entry 1."""
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", "until|fixed|1|MemoryError")
    result = recover(root, "run", "--", "--cores", "1", env=backend.env())
    assert result.returncode == 1, result.stderr
    return root


def test_resolve_waits_then_says_the_database_stayed_locked(failed, backend):
    with writer_lock(failed, backend):
        result = recover(failed, "--db-timeout", "1", "resolve", "1", env=backend.env())
    assert result.returncode == 1
    assert re.fullmatch(
        rf"Error: the dead-letter database {_where(failed, backend)} stayed locked by another "
        r"process for more than 1 s \(--db-timeout, env NEUROFLOW_DB_TIMEOUT\); nothing was "
        r"written\n",
        result.stderr,
    ), result.stderr
    listed = recover(failed, "list", "--json", env=backend.env())
    assert [e["resolved"] for e in json.loads(listed.stdout)] == [False]
    assert recover(failed, "resolve", "1", env=backend.env()).returncode == 0


def test_a_retry_that_ran_keeps_its_outcome_when_the_database_stays_locked(failed, backend):
    behave(failed, "01", "1", "wait|go|0|")  # the retry's job waits for `go`, then succeeds
    env = dict(os.environ) | backend.env() | {"NEUROFLOW_DB_TIMEOUT": "1"}
    env.pop("NEUROFLOW_DB", None) if not backend.pg_url else None
    retry = subprocess.Popen(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(failed), "retry", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (failed / "started_01_1").exists():  # Snakemake runs the job now
        assert retry.poll() is None, retry.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with writer_lock(failed, backend):
        (failed / "go").write_text("")
        out, err = retry.communicate(timeout=600)
    assert retry.returncode == 1, err
    (pending,) = sorted((failed / PENDING_DIR).glob("*.json"))
    logs = sorted((failed / ".snakemake" / "log").glob("*.snakemake.log"))
    assert re.search(
        rf"Error: the dead-letter database {_where(failed, backend)} stayed locked by another "
        r"process for more than 1 s \(--db-timeout, env NEUROFLOW_DB_TIMEOUT\)\. Snakemake "
        rf"ran \(exit 0, log \.snakemake/log/{re.escape(logs[-1].name)}\); its outcome is "
        rf"saved in {re.escape(str(pending))} and the next command that writes \(ingest, run, "
        r"retry, retry-all\) records it\n$",
        err,
    ), err
    assert "Traceback" not in err
    # the next command records it, a read command too (it catches up first)
    shown = json.loads(recover(failed, "show", "1", "--json", env=backend.env()).stdout)
    assert (shown["resolved"], shown["resolved_by"]) == (True, "retry")
    assert not pending.exists()
    ingest = recover(failed, "ingest", env=backend.env())
    assert ingest.returncode == 0, ingest.stderr
    assert "already-ingested" in ingest.stdout  # the retry's log, ingested with its outcome


def test_a_run_whose_failures_cannot_be_recorded_says_so_and_ingest_records_them(
    tmp_path, backend
):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("01", "2")])
    behave(root, "01", "1", "wait|go|0|")
    behave(root, "01", "2", "until|never|1|MemoryError")
    env = dict(os.environ) | backend.env() | {"NEUROFLOW_DB_TIMEOUT": "1"}
    if not backend.pg_url:
        env.pop("NEUROFLOW_DB", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "run", "--",
         "--cores", "1", "--keep-going"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (root / "started_01_1").exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with writer_lock(root, backend):
        (root / "go").write_text("")
        _, err = run.communicate(timeout=600)
    assert run.returncode == 1, err
    (log,) = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    assert err.splitlines()[-1] == (
        f"Error: the dead-letter database {_shown(root, backend)} stayed "
        "locked by another process for more than 1 s (--db-timeout, env "
        f"NEUROFLOW_DB_TIMEOUT). Snakemake ran (exit 1, log .snakemake/log/{log.name}) but "
        "its failures are not recorded: its log is kept, run `neuroflow-recover ingest` once "
        "the database works again"
    )
    ingest = recover(root, "ingest", "--json", env=backend.env())
    assert ingest.returncode == 0, ingest.stderr
    (entry,) = json.loads(recover(root, "list", "--json", env=backend.env()).stdout)
    assert (entry["subject"], entry["session"], entry["error_type"]) == ("01", "2", "ResourceError")
