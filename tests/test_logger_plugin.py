"""The neuroflow logger plugin: a failure reaches the queue and the webhook during the run.

Real Snakemake runs of the toy workflow with `--logger neuroflow`: job A fails for good
within seconds while job B holds the run open until the test lets it finish. A second run
compares the queue the plugin wrote with the queue a later `ingest` of the same log writes;
a third forces the plugin to raise on every event (a switch of this test, injected with
sitecustomize into the Snakemake process) and checks that the run does not notice.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from dlq_workflows import behave, main_logs, make_toy_workflow
from helpers import VENV_BIN, Webhook, tool_env

pytestmark = pytest.mark.workflow

NO_DICOM = "Error: Unable to find any DICOM images in dicom/01 (or subfolders 5 deep)"
RAISING = """\
import neuroflow_recover.logger_plugin.handler as handler


def _raise(self, record):
    raise RuntimeError("forced by the test")


handler.LogHandler._on_record = _raise
"""


def start(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--cores", "2", "--keep-going", "--logger", "neuroflow",
         *args],
        cwd=root, env=env or tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def entries(root: Path) -> list[tuple]:
    database = root / ".neuroflow" / "neuroflow.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as conn:
        try:
            return conn.execute(
                "SELECT job_key, error_type, resolved FROM dead_letter_queue ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # the tables are being created
            return []


def wait_until(condition, process: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds  # a safety bound, not a speed claim
    while not condition():
        assert process.poll() is None, f"Snakemake ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def two_jobs(root: Path) -> Path:
    make_toy_workflow(root, [("01", "1"), ("02", "1")])
    behave(root, "01", "1", f"until|never|1|{NO_DICOM}")  # A: fails for good at once
    behave(root, "02", "1", "wait|go|0|")  # B: runs until the test writes `go`
    return root


def test_a_failure_is_queued_and_announced_while_the_run_goes_on(tmp_path):
    root = two_jobs(tmp_path / "wf")
    server = Webhook()
    (root / "notify.yaml").write_text(
        json.dumps({"error_handling": {"notifications": {"slack_webhook": server.url}}})
    )
    run = start(root, "--configfile", "notify.yaml")
    try:
        wait_until(lambda: entries(root) and server.bodies, run, "A's entry and its message")
        assert run.poll() is None  # B still running
        assert entries(root) == [("toy_step/session-1_subject-01", "ValidationError", 0)]
        assert "Unable to find any DICOM images" in server.bodies[0]["text"]
    finally:
        (root / "go").write_text("")
        out, err = run.communicate(timeout=600)
        server.stop()
    assert run.returncode == 1, err[-3000:]
    assert len(server.bodies) == 1  # the end of the run announced nothing twice
    assert entries(root) == [("toy_step/session-1_subject-01", "ValidationError", 0)]


def test_the_plugin_queue_equals_a_later_ingest_of_the_log(tmp_path):
    root = two_jobs(tmp_path / "wf")
    (root / "go").write_text("")  # B finishes at once
    behave(root, "02", "1", f"until|never|1|{NO_DICOM}")
    run = start(root)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 1, err[-3000:]
    live = _dump(root)  # written by the plugin alone (the toy workflow has no end handler)
    assert len(live["dead_letter_queue"]) == 2

    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".neuroflow"))
    ingest = subprocess.run(
        [str(VENV_BIN / "neuroflow-recover"), "-d", str(copy), "ingest"],
        capture_output=True, text=True, env=tool_env(), timeout=600,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    assert _dump(copy)["dead_letter_queue"] == live["dead_letter_queue"]
    assert _dump(copy)["attempt_history"] == live["attempt_history"]

    again = subprocess.run(
        [str(VENV_BIN / "neuroflow-recover"), "-d", str(root), "ingest", *map(str, main_logs(root))],
        capture_output=True, text=True, env=tool_env(), timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert _dump(root)["dead_letter_queue"] == live["dead_letter_queue"]  # nothing changed


def test_a_plugin_that_raises_changes_nothing_for_the_run(tmp_path):
    root = two_jobs(tmp_path / "wf")
    (root / "go").write_text("")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(RAISING)
    env = tool_env(PYTHONPATH=str(inject))
    run = start(root, env=env)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 1, err[-3000:]  # A failed; B's output is there
    assert (root / "results" / "02" / "1.txt").read_text() == "ok\n"
    assert "an event was not handled" in err
    listed = subprocess.run(
        [str(VENV_BIN / "neuroflow-recover"), "-d", str(root), "list", "--json"],
        capture_output=True, text=True, env=tool_env(), timeout=600,
    )  # fmt: skip
    (entry,) = json.loads(listed.stdout)  # through the catch-up of the run's log
    assert (entry["subject"], entry["error_type"]) == ("01", "ValidationError")


# columns that differ between two databases by nature (row creation times)
VOLATILE = {"created_at", "updated_at"}


def _dump(root: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(root / ".neuroflow" / "neuroflow.db") as conn:
        out = {}
        for table in ("dead_letter_queue", "attempt_history"):
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
            kept = [c for c in columns if c not in VOLATILE]
            out[table] = conn.execute(
                f"SELECT {', '.join(kept)} FROM {table} ORDER BY id"
            ).fetchall()
        return out
