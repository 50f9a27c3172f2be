"""A data manager's day with plain `snakemake`: the queue stays current, `status` shows it.

The example workflow (2 subjects x 2 sessions: real HeudiConv + dcm2niix and QSIParc, the
QSIPrep/QSIRecon stand-ins) run with plain `snakemake`, no wrapper and no `ingest`: one
session's DICOMs are corrupt, then fixed. A second module-level scenario kills the main
Snakemake process with SIGKILL in the middle of a run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dlq_workflows import behave, main_logs, make_toy_workflow
from helpers import VENV_BIN, copy_example, tool_env
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import list_entries

pytestmark = pytest.mark.workflow

CONFIG = ["--configfile", "example/config.yaml"]
BROKEN = "example/data/dicom/sub-02/ses-01"

STATUS_TABLE = """\
STAGE            DONE  FAILED  RUNNING  BLOCKED  PENDING
bids_conversion  3     1       0        0        0
qsiprep          2     0       0        2        0
qsirecon         2     0       0        2        0
qsiparc          2     0       0        2        0

SUBJECT  SESSION  BIDS_CONVERSION            QSIPREP  QSIRECON  QSIPARC
01       01       done                       done     done      done
01       02       done                       done     done      done
02       01       failed #1 ValidationError  blocked  blocked   blocked
02       02       done                       blocked  blocked   blocked
"""
COUNTS = {
    "bids_conversion": {"done": 3, "failed": 1, "running": 0, "blocked": 0, "pending": 0},
    "qsiprep": {"done": 2, "failed": 0, "running": 0, "blocked": 2, "pending": 0},
    "qsirecon": {"done": 2, "failed": 0, "running": 0, "blocked": 2, "pending": 0},
    "qsiparc": {"done": 2, "failed": 0, "running": 0, "blocked": 2, "pending": 0},
}


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Plain `snakemake` in the workflow directory, as a user types it."""
    return subprocess.run(
        [str(VENV_BIN / "snakemake"), *CONFIG, "--cores", "2", *args],
        cwd=root, capture_output=True, text=True, timeout=900, env=tool_env(),
    )  # fmt: skip


def recover(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *CONFIG, *args],
        capture_output=True, text=True, timeout=900, env=tool_env(),
    )  # fmt: skip


def entries(root: Path, *args: str) -> list[dict]:
    result = recover(root, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = copy_example(tmp_path_factory.mktemp("plain") / "wf", subjects=2, sessions=2)
    for dcm in sorted((root / BROKEN).rglob("*.dcm")):
        dcm.write_bytes(b"truncated, not a DICOM file\n" * 4)
    return root, snakemake(root)


def test_a_plain_run_records_its_failure_itself(failed_run):
    root, run = failed_run
    assert run.returncode == 1, run.stderr[-3000:]  # Snakemake's own status, unchanged
    assert "neuroflow: dead-letter queue: 1 failed job(s) of this run; entries 1" in run.stderr
    db = open_database(None, root, create=False)  # written by the run, before any command
    with db.sessions() as session:
        (entry,) = list_entries(session)
        assert (entry.rule, entry.wildcards) == (
            "heudiconv_convert",
            {"subject": "02", "session": "01"},
        )
        assert entry.error_type == "ValidationError"
        assert entry.invocation == {
            "configfiles": ["example/config.yaml"],
            "profile": None,
            "snakemake_args": ["--cores", "2"],
        }
    db.dispose()
    (listed,) = entries(root)
    assert (listed["id"], listed["error_type"], listed["subject"]) == (1, "ValidationError", "02")


def test_status_table_and_its_csv_json_html(failed_run, tmp_path):
    root, _ = failed_run
    table = recover(root, "status")
    assert table.returncode == 0, table.stderr
    first, rest = table.stdout.split("\n", 1)
    assert first.startswith("4 session(s) of 2 subject(s), ")
    assert rest == STATUS_TABLE

    data = json.loads(recover(root, "status", "--format", "json").stdout)
    assert data["counts"] == COUNTS
    (entry,) = data["open_entries"]
    assert (entry["id"], entry["error_type"], entry["subject"]) == (1, "ValidationError", "02")

    text = recover(root, "status", "--format", "csv").stdout
    assert text.endswith("\n") and not text.endswith("\n\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 16
    frame = pd.read_csv(io.StringIO(text), dtype=str)  # loads without cleaning
    assert frame.shape == (16, 9) and list(frame.columns)[:4] == [
        "subject", "session", "stage", "state"]  # fmt: skip
    counted = {stage: dict.fromkeys(COUNTS[stage], 0) for stage in COUNTS}
    for row in rows:
        counted[row["stage"]][row["state"]] += 1
    assert counted == COUNTS
    failed = [row for row in rows if row["state"] == "failed"]
    assert [(r["subject"], r["session"], r["entry_id"]) for r in failed] == [("02", "01", "1")]
    done_times = [row["since"] for row in rows if row["state"] == "done"]
    assert all(t.endswith("+00:00") for t in done_times)

    page = tmp_path / "status.html"
    assert recover(root, "status", "--format", "html", "--output", str(page)).returncode == 0
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    embedded = html.split('id="status-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["counts"] == COUNTS
    assert "neuroflow-recover -d" in html and "retry 1" in html

    only = recover(root, "status", "--state", "failed", "--format", "csv").stdout
    assert [r["state"] for r in csv.DictReader(io.StringIO(only))] == ["failed"]


def test_a_second_plain_run_after_the_fix_resolves_the_entry(failed_run, tmp_path):
    root, _ = failed_run
    fresh = tmp_path / "fresh"
    subprocess.run(
        [sys.executable, "example/make_example_data.py", "--out", str(fresh), "--subjects", "2",
         "--sessions", "2"],
        cwd=root, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    shutil.rmtree(root / BROKEN)
    shutil.copytree(fresh / "dicom" / "sub-02" / "ses-01", root / BROKEN)
    run = snakemake(root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert entries(root) == []
    (resolved,) = entries(root, "--all")
    assert resolved["resolved"] is True and resolved["resolved_by"] == "snakemake"
    shown = json.loads(recover(root, "show", "1", "--json").stdout)
    last_log = main_logs(root)[-1].name.removesuffix(".snakemake.log")
    assert f"the job succeeded in Snakemake run {last_log}" in shown["resolution_notes"]
    status = json.loads(recover(root, "status", "--format", "json").stdout)
    assert {stage: c["done"] for stage, c in status["counts"].items()} == dict.fromkeys(
        COUNTS, 4
    )


def test_a_killed_run_is_picked_up_by_the_next_command(tmp_path):
    """SIGKILL to the main Snakemake (and its jobs): no end handler ran, a stale lock stays;
    `list` ingests the log first, a later `ingest` adds nothing."""
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("02", "1")])
    behave(root, "01", "1", "until|never|1|Error: Unable to find any DICOM images in d")
    behave(root, "02", "1", "wait|go|0|")
    run = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--cores", "2", "--keep-going"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=tool_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a safety bound, not a speed claim
        while not (main_logs(root) and "Error in rule" in main_logs(root)[-1].read_text()):
            assert run.poll() is None, "Snakemake ended before the failure was logged"
            assert time.monotonic() < deadline, "the failure never reached the log"
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # a node reboot: Snakemake and its jobs
        run.wait(timeout=60)
    assert (root / ".snakemake" / "locks").exists()  # stale: nobody holds it any more

    listed = subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "list", "--json"],
        capture_output=True, text=True, timeout=600, env=tool_env(),
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert (entry["subject"], entry["session"], entry["error_type"]) == (
        "01",
        "1",
        "ValidationError",
    )
    again = subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "ingest", "--json"],
        capture_output=True, text=True, timeout=600, env=tool_env(),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["entry_ids"] == []
    db = open_database(None, root, create=False)
    with db.sessions() as session:
        (only,) = list_entries(session, include_resolved=True)
        assert only.attempts == 1
    db.dispose()
