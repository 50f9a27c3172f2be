"""No run can hang: accounting fails in the middle of a SLURM run of `neuroflow-recover run`.

The failure is real but private to the run under test: `neuroflow-recover run` (and so
Snakemake and the watchdog's squeue) gets its own copy of the cluster's slurm.conf
(SLURM_CONF), and right after the job is submitted the copy's AccountingStoragePort is
pointed at a closed port, so every `sacct` of that run gets `Connection refused` from the
real client, exactly as with slurmdbd down, while the shared cluster (and anyone else using
it) is untouched; squeue still reaches slurmctld. The job itself runs on the real cluster.

* default status command (sacct): the plugin loses its job and would wait forever; the
  watchdog (`neuroflow_recover.recover.watchdog`) stops the run within a bounded time, exit 1 with
  a clear message, nothing of the run left in squeue;
* `--slurm-status-command squeue`: the run does not depend on accounting and completes;
  the silent 25 s job is not mistaken for a stall.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import probe
from neuroflow_recover import environment
from neuroflow_recover.errors import NeuroflowError
from neuroflow_recover.recover import watchdog

TARGET = probe.target("probe_sleep")  # a 25 s job
# must exceed the plugin's status interval at that point of the run (it grows by 10 s per
# round without a successful job: 2, 12, 22, 32, 42 s with the test overrides)
STALL_SECONDS = 60
# the 25 s job + the stall + polls (6 s) + SIGINT shutdown stay far below this
BOUND_SECONDS = 300
SAFETY_KILL_SECONDS = 600  # only if the watchdog itself failed: never hang the suite


def cluster_conf() -> Path:
    return Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).resolve()


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    workdir: Path

    @property
    def run_id(self) -> str | None:
        found = watchdog.RUN_ID_LINE.search(self.stderr)
        return found.group(1) if found else None


def run_with_accounting_lost(workdir: Path, status_command: str) -> CliRun:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(probe.PROBE_SNAKEFILE.read_text())
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text("sessions: sessions.tsv\n")
    conf = workdir / "slurm.conf"
    conf.write_text(cluster_conf().read_text())
    env = probe.env()
    env.pop("NEUROFLOW_DB", None)
    env.pop("NEUROFLOW_STALL_SECONDS", None)
    env["SLURM_CONF"] = str(conf)
    snakemake_args = probe.snakemake_command([TARGET], ["--slurm-status-command", status_command])
    command = [
        sys.executable, "-m", "neuroflow_recover.cli", "-d", str(workdir),
        "run", "--stall-timeout", str(STALL_SECONDS), "--", *snakemake_args[1:],
    ]  # fmt: skip
    started = time.monotonic()
    with open(workdir / "cli.stdout", "w") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        safety = threading.Timer(SAFETY_KILL_SECONDS, os.killpg, (proc.pid, signal.SIGKILL))
        safety.start()
        lines: list[str] = []
        broken = False
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if not broken and "has been submitted with SLURM jobid" in line:
                text = re.sub(r"(?m)^AccountingStoragePort=.*$", "", conf.read_text())
                conf.write_text(text + "AccountingStoragePort=1\n")  # nothing listens there
                broken = True
        returncode = proc.wait()
        safety.cancel()
    stderr = "".join(lines)
    (workdir / "cli.stderr").write_text(stderr)
    return CliRun(
        returncode,
        (workdir / "cli.stdout").read_text(),
        stderr,
        time.monotonic() - started,
        workdir,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cluster) -> dict[str, CliRun]:
    base = tmp_path_factory.mktemp("watchdog")
    results: dict[str, CliRun] = {}

    def go(name: str) -> None:
        results[name] = run_with_accounting_lost(base / name, name)

    threads = [threading.Thread(target=go, args=(name,)) for name in ("sacct", "squeue")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.slurm
@pytest.mark.workflow
def test_lost_accounting_ends_the_run_with_a_clear_error_in_bounded_time(runs):
    run = runs["sacct"]
    assert run.run_id, run.stderr[-3000:]
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.seconds < BOUND_SECONDS, run.seconds
    assert run.seconds > STALL_SECONDS  # not stopped before the stall timeout
    # the plugin never noticed its job finish: a real hang, not a slow job
    assert "Finished jobid" not in run.stderr
    # the CLI's error (click: "Error: ..."), no traceback
    error = run.stderr[run.stderr.rindex("Error: ") :]
    assert (
        f"Snakemake made no progress for {STALL_SECONDS} s and no job of this run "
        f"(SLURM run {run.run_id}) is queued or running on SLURM" in error
    )
    assert "is the status command (sacct) working?" in error
    assert "the next run re-runs whatever did not finish" in error
    assert "--unlock" in error
    assert "Traceback" not in run.stderr
    # nothing of the run is left queued or running (squeue via the shared cluster config)
    assert watchdog.active_slurm_jobs(run.run_id, probe.env()) == []


@pytest.mark.slurm
@pytest.mark.workflow
def test_squeue_status_command_does_not_need_accounting(runs):
    run = runs["squeue"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Finished jobid: 0 (Rule: probe_sleep)" in run.stderr
    assert "made no progress" not in run.stderr
    # the job was silent for 25 s: the watchdog did not mistake a running job for a hang
    assert run.seconds > 25
    assert run.stdout.splitlines()[-1] == "dead-lettered entries: none"


def test_watchdog_verdicts_follow_output_and_queue():
    """The decision rule alone, on a controlled clock (no cluster needed)."""
    now = [0.0]
    active: list[list[str] | None] = [["7"]]
    watch = watchdog.RunWatch(
        watchdog.WatchLimits(stall_seconds=100, poll_seconds=10),
        active_jobs=lambda run_id: active[0],
        clock=lambda: now[0],
    )
    now[0] = 500
    assert watch.verdict() is None  # no SLURM run id: a local run is never stopped
    watch.feed("SLURM run ID: 1234-abcd\n")
    assert watch.run_id == "1234-abcd"
    now[0] = 900
    assert watch.verdict() is None  # quiet for 400 s but job 7 is running
    active[0] = []
    now[0] = 950
    assert watch.verdict() is None  # no job for 50 s only
    now[0] = 1001
    assert "no job of this run (SLURM run 1234-abcd)" in watch.verdict()
    watch.feed("Finished jobid: 0\n")
    assert watch.verdict() is None
    active[0] = None  # squeue fails
    now[0] = 1200
    assert "(squeue failed)" in watch.verdict()


def test_stall_limits_and_environment(monkeypatch):
    assert watchdog.WatchLimits.for_stall(900) == watchdog.WatchLimits(900, 30, 120)
    assert watchdog.WatchLimits.for_stall(60) == watchdog.WatchLimits(60, 6, 60)
    monkeypatch.delenv(environment.STALL_SECONDS, raising=False)
    assert watchdog.stall_seconds_from_env() == 900
    monkeypatch.setenv(environment.STALL_SECONDS, "45")
    assert watchdog.stall_seconds_from_env() == 45
    monkeypatch.setenv(environment.STALL_SECONDS, "soon")
    with pytest.raises(NeuroflowError, match="not a number of seconds"):
        watchdog.stall_seconds_from_env()
