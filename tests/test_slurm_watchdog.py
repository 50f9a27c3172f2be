"""No run can hang: accounting fails in the middle of a SLURM run.

The failure is real but private to the run under test: Snakemake gets its own copy of the
cluster's slurm.conf (SLURM_CONF), and right after its job is submitted the copy's
AccountingStoragePort is pointed at a closed port, so every `sacct` of that process gets
`Connection refused` from the real client, exactly as with slurmdbd down, while the shared
cluster (and anyone else using it) is untouched. The job itself runs on the real cluster
(the plugin's job step does not pass SLURM_CONF on).

* default status command (sacct): the plugin loses its job and would wait forever; the
  watchdog (tests/slurm/watchdog.py, the mechanism proposed for `neuroflow-recover run`)
  stops it in bounded time;
* `--slurm-status-command squeue`: the run does not depend on accounting and completes.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "slurm"))
import probe  # noqa: E402
import watchdog  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

TARGET = probe.target("probe_sleep")  # a 25 s job
# stall must exceed the plugin's status interval at that point of the run (it grows by 10 s
# per round without a success: 2, 12, 22, 32, 42 s here)
LIMITS = watchdog.WatchLimits(stall_seconds=60, poll_seconds=5, grace_seconds=60, max_seconds=400)


def require_cluster() -> None:
    problem = probe.cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"no SLURM cluster under CI: {problem}")
    pytest.skip(f"no SLURM cluster: {problem}")


def cluster_conf() -> Path:
    return Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).resolve()


def run_with_accounting_lost(workdir: Path, status_command: str) -> watchdog.WatchedRun:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(probe.PROBE_SNAKEFILE.read_text())
    conf = workdir / "slurm.conf"
    conf.write_text(cluster_conf().read_text())
    env = probe.env()
    env["SLURM_CONF"] = str(conf)

    def break_accounting(line: str) -> None:
        if "has been submitted with SLURM jobid" in line:
            text = re.sub(r"(?m)^AccountingStoragePort=.*$", "", conf.read_text())
            conf.write_text(text + "AccountingStoragePort=1\n")  # nothing listens there

    command = probe.snakemake_command([TARGET], ["--slurm-status-command", status_command])
    return watchdog.run_watched(
        command, workdir, workdir / "snakemake.out", LIMITS, env=env, on_line=break_accounting
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, watchdog.WatchedRun]:
    require_cluster()
    base = tmp_path_factory.mktemp("watchdog")
    results: dict[str, watchdog.WatchedRun] = {}

    def go(name: str) -> None:
        results[name] = run_with_accounting_lost(base / name, name)

    threads = [threading.Thread(target=go, args=(name,)) for name in ("sacct", "squeue")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results["base"] = base  # type: ignore[assignment]
    return results


def output(runs, name: str) -> str:
    return (runs["base"] / name / "snakemake.out").read_text(errors="replace")


def test_sacct_failure_is_stopped_by_the_watchdog_in_bounded_time(runs):
    run = runs["sacct"]
    text = output(runs, "sacct")
    assert run.stuck is not None, text[-3000:]
    assert "no job of the run was pending or running" in run.stuck
    assert run.returncode != 0
    # bounded: the 25 s job + stall_seconds + a few polls + SIGINT shutdown
    assert run.seconds < LIMITS.max_seconds, run.seconds
    # the job really completed on the cluster, but the plugin never noticed
    assert (runs["base"] / "sacct" / "results/01/1/probe_sleep.txt").exists()
    assert "Finished jobid" not in text
    assert "Terminating processes on user request" in text
    # nothing of the run is left queued or running (squeue via the shared cluster config)
    assert watchdog.active_slurm_jobs(run.run_id, probe.env()) == []


def test_squeue_status_command_does_not_need_accounting(runs):
    run = runs["squeue"]
    text = output(runs, "squeue")
    assert run.stuck is None, run.stuck
    assert run.returncode == 0, text[-3000:]
    assert "Finished jobid: 0 (Rule: probe_sleep)" in text
    # the job was silent for 25 s: the watchdog did not mistake a running job for a hang
    assert run.seconds > 25


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
    assert watch.verdict() is None  # no SLURM run id yet: a local run, no stall rule
    watch.feed("SLURM run ID: 1234-abcd\n")
    assert watch.run_id == "1234-abcd"
    now[0] = 900
    assert watch.verdict() is None  # quiet for 400 s but job 7 is running
    active[0] = []
    now[0] = 950
    assert watch.verdict() is None  # no job for 50 s only
    now[0] = 1001
    assert "no job of the run" in watch.verdict()
    watch.feed("Finished jobid: 0\n")
    assert watch.verdict() is None
    active[0] = None  # squeue fails
    now[0] = 1200
    assert "squeue failed" in watch.verdict()
    capped = watchdog.RunWatch(watchdog.WatchLimits(max_seconds=60), clock=lambda: now[0])
    now[0] += 61
    assert "maximum wall time" in capped.verdict()
