"""Running Snakemake: its output streamed to stderr, its own main log found, Ctrl-C passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import environment
from ..errors import SnakemakeFailed
from ..logsetup import get_logger
from ..workflow.invocation import show_command
from .lock import recorded_holder
from .watchdog import Watchdog, WatchLimits, stall_seconds_from_env, stalled_error

log = get_logger(__name__)


@dataclass
class SnakemakeRun:
    command: list[str]
    returncode: int
    log_path: Path | None  # from the "Complete log(s): PATH" line
    output_tail: list[str]


def run_snakemake(
    command: list[str],
    workdir: Path,
    *,
    echo=None,
    extra_env: dict[str, str] | None = None,
    stall_seconds: float | None = None,
) -> SnakemakeRun:
    """Run Snakemake in `workdir`, streaming its output to stderr; find ITS main log.

    `extra_env` is added to this process's environment for Snakemake (and its jobs).
    A SLURM run is watched (`watchdog`): stalled for `stall_seconds` (None: env
    NEUROFLOW_STALL_SECONDS, default 900; 0: not watched) -> stopped, `RunStalled` raised.
    """
    stall = stall_seconds_from_env() if stall_seconds is None else stall_seconds
    log.info("running snakemake", command=show_command(command), workdir=str(workdir))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[environment.CALLER_INGESTS] = "1"  # we ingest its log: its end handler need not
    env.update(extra_env or {})
    try:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
        )
    except OSError as exc:
        raise SnakemakeFailed(f"cannot start Snakemake ({command[0]}): {exc}") from exc
    with recorded_holder(workdir, process.pid):
        return _follow(process, command, stall, env, echo)


def _follow(process: subprocess.Popen, command: list[str], stall: float, env: dict,
            echo) -> SnakemakeRun:  # fmt: skip
    watchdog = Watchdog(process, WatchLimits.for_stall(stall), env) if stall > 0 else None
    log_path: Path | None = None
    tail: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if watchdog is not None:
                watchdog.feed(line)
            (echo or _to_stderr)(line)
            tail.append(line.rstrip("\n"))
            del tail[:-40]
            found = _complete_log(line)
            if found is not None:
                log_path = found
    except KeyboardInterrupt:
        # Ctrl-C reached Snakemake too (same process group): let it shut down its jobs
        log.warning("interrupted: waiting for Snakemake to stop (Ctrl-C again: terminate it)")
        _stop(process)
        raise
    returncode = process.wait()
    log.info("snakemake finished", returncode=returncode, log=str(log_path) if log_path else None)
    stalled = watchdog.finish() if watchdog is not None else None
    if stalled is not None:
        raise stalled_error(stalled, log_path)
    return SnakemakeRun(command, returncode, log_path, tail)


def _stop(process: subprocess.Popen) -> None:
    """After Ctrl-C: let Snakemake stop its jobs and release its lock; Ctrl-C again: SIGTERM."""
    try:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the signal was for us only: pass it on
            process.send_signal(signal.SIGINT)
        process.wait()
    except KeyboardInterrupt:
        process.terminate()


def _to_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def _complete_log(line: str) -> Path | None:
    marker = "Complete log(s): "
    if marker not in line:
        return None
    for item in line.split(marker, 1)[1].strip().split(", "):
        if item.endswith(".snakemake.log"):
            return Path(item)
    return None


def require_log(run: SnakemakeRun) -> None:
    """A run that wrote no main log ran no job: fine when Snakemake had nothing to do (it
    prints no log line then), else SnakemakeFailed with its last output."""
    if run.returncode == 0:
        return
    tail = "\n".join(run.output_tail[-15:])
    raise SnakemakeFailed(
        f"Snakemake exited with {run.returncode} before running any job "
        f"(no `Complete log(s):` line); its last output:\n{tail}"
    )
