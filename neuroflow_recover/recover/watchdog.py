"""No SLURM run can hang: a stall watchdog around the Snakemake process.

Why: snakemake-executor-plugin-slurm 2.8 drops every active job from its list when a status
query fails (`sacct` while slurmdbd is down, `squeue` while slurmctld is down) and then
waits for them forever without a message, also after the accounting comes back; SIGTERM
only prints `Will exit after finishing currently running jobs` and keeps waiting. SIGINT
ends it (the plugin cancels what it still knows, the lock is released, the main log is
completed). Measured in docs/slurm-local-notes.md.

The rule (`RunWatch`): a run is STALLED when, for `stall_seconds`, Snakemake printed
nothing AND no job of its SLURM run was pending or running in `squeue` (the plugin
prints `SLURM run ID: <id>` and names every job it submits after it; checked every
`poll_seconds` once the output is quiet; a failing `squeue` counts as "no job"). The watch
starts only when that line appears, i.e. only when the run uses the SLURM executor (profile
`executor: slurm`, `--executor slurm`, wherever the profile came from); local runs are
never watched.

`stall_seconds` defaults to 900 s: a healthy run prints a line at the latest one status
interval after a job ended, and the plugin's interval grows by 10 s per round without a
successful job up to 180 s, so the stall must stay well above 180 s (plus sacct's lag
behind slurmctld) to never stop a healthy run. `NEUROFLOW_STALL_SECONDS` or the CLI's
`--stall-timeout` change it; 0 turns the watchdog off.

When stalled (`Watchdog`): SIGINT to Snakemake, SIGKILL (Snakemake and its child
processes) after `grace_seconds`, then `scancel --name <run id>` for whatever is left of the
run, and the caller raises `RunStalled` (exit 1). Jobs that were running are not lost:
their outputs are missing (or incomplete, which Snakemake's metadata marks), so the next
run re-runs them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import environment
from ..errors import RunStalled
from ..logsetup import get_logger

log = get_logger(__name__)

DEFAULT_STALL_SECONDS = 900.0
RUN_ID_LINE = re.compile(r"SLURM run ID: (\S+)")
ACTIVE_STATES = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,RESIZING"
SLURM_CLIENT_TIMEOUT_S = 60


@dataclass(frozen=True)
class WatchLimits:
    stall_seconds: float = DEFAULT_STALL_SECONDS
    poll_seconds: float = 30.0
    grace_seconds: float = 120.0

    @classmethod
    def for_stall(cls, stall_seconds: float) -> WatchLimits:
        """Poll often enough for the stall (<= 1/10 of it, 1..30 s); grace <= the stall."""
        return cls(
            stall_seconds=stall_seconds,
            poll_seconds=max(1.0, min(30.0, stall_seconds / 10)),
            grace_seconds=max(10.0, min(120.0, stall_seconds)),
        )


def stall_seconds_from_env(default: float = DEFAULT_STALL_SECONDS) -> float:
    return environment.non_negative(
        environment.STALL_SECONDS, default, "a number of seconds", " (0 = no watchdog)"
    )


def active_slurm_jobs(run_id: str, env: dict[str, str] | None = None) -> list[str] | None:
    """Ids of the run's pending/running jobs; None when squeue itself fails."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "--name", run_id, "--states", ACTIVE_STATES, "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=SLURM_CLIENT_TIMEOUT_S,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.split()


def cancel_run(run_id: str, env: dict[str, str] | None = None) -> None:
    """`scancel --name <run id>`: every job of the run that is still queued or running."""
    try:
        done = subprocess.run(
            ["scancel", "--name", run_id],
            capture_output=True,
            text=True,
            timeout=SLURM_CLIENT_TIMEOUT_S,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("scancel failed: cancel the run's jobs by hand", run_id=run_id, error=str(exc))
        return
    if done.returncode != 0:
        log.error(
            "scancel failed: cancel the run's jobs by hand",
            run_id=run_id,
            error=(done.stderr or done.stdout).strip(),
        )


class RunWatch:
    """Decides, from the output lines and squeue, whether a Snakemake run is stalled."""

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
            found = RUN_ID_LINE.search(line)
            if found:
                self.run_id = found.group(1)

    def verdict(self) -> str | None:
        """None while the run looks alive (or is not a SLURM run), else why it stalled."""
        now = self.clock()
        if self.run_id is None or now - self.last_output < self.limits.poll_seconds:
            return None
        active = self.active_jobs(self.run_id)
        if active:
            self.last_active = now
            return None
        idle = now - max(self.last_output, self.last_active)
        if idle < self.limits.stall_seconds:
            return None
        squeue = " (squeue failed)" if active is None else ""
        return (
            f"Snakemake made no progress for {self.limits.stall_seconds:.0f} s and no job of "
            f"this run (SLURM run {self.run_id}) is queued or running on SLURM{squeue}: is the "
            "status command (sacct) working?"
        )


class Watchdog:
    """Watches a running Snakemake process in a thread; stops it when the run stalls.

    The caller feeds every output line (`feed`) and calls `finish()` after the process
    ended; `stalled` then says why it was stopped (None: Snakemake ended by itself).
    """

    def __init__(
        self,
        process: subprocess.Popen,
        limits: WatchLimits,
        env: dict[str, str] | None = None,
    ) -> None:
        self.process = process
        self.limits = limits
        self.env = env
        self.watch = RunWatch(limits, lambda run_id: active_slurm_jobs(run_id, env))
        self.stalled: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="neuroflow-watchdog", daemon=True)
        self._thread.start()

    def feed(self, line: str) -> None:
        self.watch.feed(line)

    def finish(self) -> str | None:
        self._done.set()
        self._thread.join(timeout=self.limits.grace_seconds + 2 * SLURM_CLIENT_TIMEOUT_S)
        return self.stalled

    def _loop(self) -> None:
        while not self._done.wait(self.limits.poll_seconds):
            if self.process.poll() is not None:
                return
            why = self.watch.verdict()
            if why is None:
                continue
            self.stalled = why
            log.error("stopping a stalled Snakemake run", reason=why, pid=self.process.pid)
            stop_process(self.process, self.limits.grace_seconds)
            if self.watch.run_id:
                cancel_run(self.watch.run_id, self.env)
            return


def stop_process(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGINT (Snakemake shuts down, releases its lock); SIGKILL it and its children later."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=grace_seconds)
        return
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    log.warning("Snakemake ignored SIGINT: killing it", pid=process.pid, grace_s=grace_seconds)
    for victim in [*children, psutil.Process(process.pid)]:
        try:
            victim.kill()
        except psutil.Error:
            continue
    process.wait()


def stalled_error(reason: str, log_path: Path | None) -> RunStalled:
    """The error a stalled run ends with (the CLI prints it, exit 1)."""
    where = f" Its main log: {log_path}." if log_path else ""
    return RunStalled(
        f"{reason} Stopped it (SIGINT, its SLURM jobs cancelled); the jobs it was waiting "
        "for are not lost: their outputs are checked, so the next run re-runs whatever did "
        "not finish. Re-run with `--unlock` if a lock remains; if sacct does not work on "
        "this cluster use `--slurm-status-command squeue`." + where
    )
