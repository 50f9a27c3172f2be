"""On the real (local) SLURM cluster with `--profile profiles/slurm`: the logger plugin
queues a failed job and delivers its message while another job of the run still runs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import probe
from helpers import REPO, Webhook

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]


def _entries(root: Path) -> list[tuple]:
    database = root / ".neuroflow" / "neuroflow.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as conn:
        try:
            return conn.execute("SELECT job_key, error_type FROM dead_letter_queue").fetchall()
        except sqlite3.OperationalError:
            return []


def test_a_failure_surfaces_while_the_slurm_run_goes_on(tmp_path, cluster):
    root = tmp_path / "wf"
    root.mkdir()
    (root / "Snakefile").write_text(probe.PROBE_SNAKEFILE.read_text())
    shutil.copytree(REPO / "profiles" / "slurm", root / "profiles" / "slurm")
    server = Webhook()
    (root / "notify.yaml").write_text(
        json.dumps({"error_handling": {"notifications": {"slack_webhook": server.url}}})
    )
    command = [  # the targets first: --configfile takes every argument after it
        str(probe.BIN / "snakemake"), probe.target("probe_fail"), probe.target("probe_wait"),
        "--profile", "profiles/slurm", *probe.STATUS_OVERRIDES, "--latency-wait", "5",
        "--configfile", "notify.yaml",
    ]  # fmt: skip
    run = subprocess.Popen(
        command, cwd=root, env=probe.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 400  # a safety bound, not a speed claim
        while not (_entries(root) and server.bodies):
            assert run.poll() is None, f"Snakemake ended first: {run.communicate()[1][-4000:]}"
            assert time.monotonic() < deadline, "the failure never reached the queue"
            time.sleep(1)
        assert run.poll() is None  # probe_wait still runs on SLURM
        assert [key for key, _ in _entries(root)] == ["probe_fail/session-1_subject-01"]
        assert "probe_fail" in server.bodies[0]["text"]
    finally:
        (root / "go").write_text("")
        out, err = run.communicate(timeout=600)
        server.stop()
    assert run.returncode == 1, err[-3000:]
    assert (root / probe.target("probe_wait")).read_text() == "ok\n"
    assert len(server.bodies) == 1
