"""A bounded-time watchdog around a Snakemake process (prototype for `neuroflow-recover run`).

Why: snakemake-executor-plugin-slurm 2.8 drops every active job from its list when a status
query fails (`sacct` with slurmdbd down, `squeue` with slurmctld down) and then waits for
them forever without a message, also after the accounting comes back; SIGTERM only prints
`Will exit after finishing currently running jobs` and keeps waiting. SIGINT ends it
(`Terminating processes on user request`, the plugin cancels its jobs, the lock is
released). Measured in docs/slurm-local-notes.md.

The rule: the run is STUCK when, for `stall_seconds`, Snakemake printed nothing AND no job of
its SLURM run (`SLURM run ID: <uuid>` in its output; the plugin names every job after it) was
pending or running in `squeue` (checked every `poll_seconds` once the output is quiet). A
healthy run prints a line within the plugin's largest status interval (180 s) after a job
ended, so `stall_seconds` must be well above that (default 900 s). A failing `squeue`
counts as "no job". `max_seconds` (optional) bounds
the whole run. When stuck: SIGINT to the process group, SIGKILL after `grace_seconds`, then
`scancel --name <run id>` for whatever is left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_RUN_ID = re.compile(r"SLURM run ID: (\S+)")
ACTIVE_STATES = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,RESIZING"


@dataclass(frozen=True)
class WatchLimits:
    stall_seconds: float = 900.0
    max_seconds: float | None = None
    poll_seconds: float = 30.0
    grace_seconds: float = 120.0


def active_slurm_jobs(run_id: str, env: dict[str, str] | None = None) -> list[str] | None:
    """Ids of the run's pending/running jobs; None when squeue itself fails."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "--name", run_id, "--states", ACTIVE_STATES, "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.split()


class RunWatch:
    """Decides, from the output lines and squeue, whether a Snakemake run is stuck."""

    def __init__(
        self,
        limits: WatchLimits,
        active_jobs: Callable[[str], list[str] | None] = active_slurm_jobs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.active_jobs = active_jobs
        self.clock = clock
        self.started = clock()
        self.last_output = self.started
        self.last_active = self.started  # last time squeue showed a job of the run
        self.run_id: str | None = None

    def feed(self, line: str) -> None:
        self.last_output = self.clock()
        if self.run_id is None:
            found = _RUN_ID.search(line)
            if found:
                self.run_id = found.group(1)

    def verdict(self) -> str | None:
        """None while the run looks alive, else why it is considered stuck."""
        now = self.clock()
        if self.limits.max_seconds is not None and now - self.started > self.limits.max_seconds:
            return f"the run exceeded its maximum wall time of {self.limits.max_seconds:.0f} s"
        if self.run_id is None or now - self.last_output < self.limits.poll_seconds:
            return None
        active = self.active_jobs(self.run_id)
        if active:
            self.last_active = now
            return None
        idle = now - max(self.last_output, self.last_active)
        if idle < self.limits.stall_seconds:
            return None
        what = "squeue failed" if active is None else "no job of the run was pending or running"
        return (
            f"no output for {now - self.last_output:.0f} s and {what} for {idle:.0f} s "
            f"(SLURM run {self.run_id}): the executor lost track of its jobs"
        )


@dataclass
class WatchedRun:
    returncode: int
    stuck: str | None  # why the watchdog stopped it, None if Snakemake ended by itself
    seconds: float
    run_id: str | None


def run_watched(
    command: list[str],
    cwd: Path,
    output: Path,
    limits: WatchLimits,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> WatchedRun:
    """Run Snakemake, copy its output to `output`, stop it when the watch says stuck."""
    watch = RunWatch(limits, lambda run_id: active_slurm_jobs(run_id, env))
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        with open(output, "w") as sink:
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                watch.feed(line)
                if on_line is not None:
                    on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stuck: str | None = None
    while proc.poll() is None:
        try:
            proc.wait(timeout=limits.poll_seconds)
        except subprocess.TimeoutExpired:
            stuck = watch.verdict()
            if stuck is not None:
                stop(proc, limits.grace_seconds)
                if watch.run_id:
                    subprocess.run(
                        ["scancel", "--name", watch.run_id],
                        env=env,
                        capture_output=True,
                        timeout=60,
                    )
    reader.join(timeout=30)
    return WatchedRun(proc.returncode, stuck, watch.clock() - watch.started, watch.run_id)


def stop(proc: subprocess.Popen, grace_seconds: float) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
