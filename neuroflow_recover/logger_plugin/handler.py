"""The plugin's log handler: events in, live ingests and notifications out, in the background.

`emit` runs in Snakemake's logging thread and only records what an event says; a worker
thread starts `neuroflow-recover ingest-live` for jobs Snakemake gave up on (at most one
at a time, batched) and `neuroflow-recover notify` when a circuit breaker opened. Any
problem is logged and forgotten: the run goes on, and its end-of-run ingest catches up.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from neuroflow_recover import environment
from neuroflow_recover.logger_plugin.tracker import JobTracker
from neuroflow_recover.workflow.invocation import Invocation

TICK_SECONDS = 2.0  # how often the worker looks for final failures
BREAKER_CHECK_SECONDS = 30.0
COMMAND_TIMEOUT_SECONDS = 600.0

log = logging.getLogger("neuroflow.logger_plugin")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """No settings: the workflow's config (error_handling) says everything."""


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        # jobs on compute nodes (--target-jobs) and dry runs have nothing to report
        self.active = not self.common_settings.dryrun and "--target-jobs" not in sys.argv
        self.tracker = JobTracker()
        self.worker = _Worker(self.tracker) if self.active else None

    def emit(self, record: logging.LogRecord) -> None:
        if not self.active:
            return
        try:
            self._on_record(record)
        except Exception as exc:  # noqa: BLE001 - never at the run's expense
            _warn_once(f"neuroflow logger plugin: an event was not handled: {exc!r}")

    def _on_record(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_ERROR:
            self.tracker.job_error(int(record.jobid))
            self.worker.start()
        elif event == LogEvent.JOB_INFO:
            self.tracker.job_restarted(int(record.jobid))  # a new attempt of the job
            self.worker.start()
        elif event is None and isinstance(record.msg, str):
            self.tracker.message(record.msg)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        super().close()

    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # every event, whatever --quiet says

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False


class _Worker:
    """Started with the run's first job event; runs the commands one at a time."""

    def __init__(self, tracker: JobTracker):
        self.tracker = tracker
        self.workdir = Path.cwd()  # Snakemake runs in the workflow directory by now
        self.command = _base_command(self.workdir)
        self.hold_transient = environment.flag(os.environ, environment.DEFER_TRANSIENT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._breakers: set[str] = set()
        self._next_breaker_check = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="neuroflow-live", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """The run is over: no job restarts any more, what failed last is final now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=COMMAND_TIMEOUT_SECONDS)
        try:
            final = self.tracker.take_final(now=float("inf"))
            if final:
                self._ingest(final)
        except Exception as exc:  # noqa: BLE001 - never at the run's expense
            _warn_once(f"neuroflow logger plugin: the last failures were not queued: {exc!r}")

    def _loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - never at the run's expense
                _warn_once(f"neuroflow logger plugin: live bookkeeping failed: {exc!r}")

    def _tick(self) -> None:
        final = self.tracker.take_final()
        if final:
            self._ingest(final)
        if time.monotonic() >= self._next_breaker_check:
            self._next_breaker_check = time.monotonic() + BREAKER_CHECK_SECONDS
            if self._new_breakers():
                self._run(["notify"])

    def _ingest(self, jobids: list[int]) -> None:
        main_log = _main_log(self.workdir)
        if main_log is None:
            return
        args = ["ingest-live", str(main_log), "--jobs", ",".join(map(str, jobids))]
        if self.hold_transient:
            args.append("--hold-transient")
        self._run(args)

    def _new_breakers(self) -> bool:
        found = {p.name for p in (self.workdir / ".neuroflow" / "breaker").glob("*.json")}
        new = found - self._breakers
        self._breakers |= found
        return bool(new)

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(
            [*self.command, *args], cwd=self.workdir, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )  # fmt: skip
        if done.returncode != 0:
            _warn_once(f"neuroflow logger plugin: {args[0]} failed: {done.stderr.strip()[-300:]}")


def _base_command(workdir: Path) -> list[str]:
    """`neuroflow-recover -d DIR [--configfile F ...]`: the run's own config files."""
    invocation = Invocation.from_snakemake_argv(sys.argv[1:])
    command = [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(workdir)]
    for name in invocation.configfiles:
        command += ["--configfile", name]
    return command


def _main_log(workdir: Path) -> Path | None:
    """This run's main log: Snakemake's file handler, else the newest main log."""
    for handler in logging.getLogger("snakemake.logging").handlers:
        name = getattr(handler, "baseFilename", "")
        if name.endswith(".snakemake.log"):
            return Path(name)
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1] if logs else None


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    key = text[:80]
    if key not in _warned:
        _warned.add(key)
        print(text, file=sys.stderr, flush=True)
