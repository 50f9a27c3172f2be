"""Running one tool: no shell, output streamed to the rule log, signals forwarded.

SIGTERM / SIGINT / SIGHUP are forwarded to the tool's process group; if the tool has not
ended ``KILL_GRACE_SECONDS`` later it gets SIGKILL. The tool dies with the runner (Linux
parent-death signal), so a killed step leaves no orphan.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..logsetup import get_logger
from .messages import cannot_start_line
from .usage import TreeMeter, Usage

log = get_logger(__name__)

TAIL_LINES = 50
KILL_GRACE_SECONDS = 10.0  # after forwarding a signal, SIGKILL the tool if it is still alive
READER_GRACE_SECONDS = 5.0  # after the tool exits, wait this long for its pipe to close
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class ToolRun:
    """What running the tool produced."""

    exit_code: int
    tail: list[str]
    log_offset: int
    signal_name: str | None = None
    elapsed: float = 0.0
    start_error: str | None = None
    usage: Usage | None = None  # peak memory, elapsed and CPU time of the tool's tree


def tool_name(command: list[str]) -> str:
    return os.path.basename(command[0]) if command else "?"


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: the tool gets SIGKILL if the runner dies (e.g. SIGKILLed), no orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pump(pipe, logfile, tail: deque) -> None:
    for raw in iter(lambda: pipe.readline(1 << 16), b""):
        logfile.write(raw)
        logfile.flush()
        tail.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    pipe.close()


class SignalForwarder:
    """While a step runs: forward SIGTERM/SIGINT/SIGHUP to the tool's process group.

    Installed for the whole step (not only while the tool runs) so that a signal arriving
    while the record is written does not kill the runner half-way. Main thread only.
    """

    def __init__(self):
        self.received: list[int] = []
        self.pgid: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, _frame):
        self.received.append(signum)
        self.forward(signum)

    def forward(self, signum) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass


def run_tool(
    command: list[str],
    log_path: Path,
    signals: SignalForwarder,
    env: Mapping[str, str] | None = None,
) -> ToolRun:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(log_path, "ab", buffering=0) as logfile:
        offset = logfile.tell()
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                process_group=0,
                preexec_fn=_set_parent_death_signal,
            )
        except OSError as exc:
            line = cannot_start_line(tool_name(command), exc.strerror or str(exc))
            logfile.write((line + "\n").encode())
            tail.append(line)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return ToolRun(code, list(tail), offset, start_error=line)
        signals.pgid = proc.pid
        meter = TreeMeter()
        if signals.received:  # arrived between the check and the start
            signals.forward(signals.received[0])
        reader = threading.Thread(target=_pump, args=(proc.stdout, logfile, tail), daemon=True)
        reader.start()
        escalate_at: float | None = None
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            meter.sample(proc.pid)
            if signals.received and escalate_at is None:
                escalate_at = time.monotonic() + KILL_GRACE_SECONDS
            if escalate_at is not None and time.monotonic() > escalate_at:
                signals.forward(signal.SIGKILL)
                escalate_at = float("inf")  # once
        elapsed = time.monotonic() - started
        reader.join(READER_GRACE_SECONDS)  # a daemon the tool left behind may hold the pipe
        code = proc.returncode
        exit_code = 128 - code if code < 0 else code
        name = signal.Signals(signals.received[0]).name if signals.received else None
        return ToolRun(
            exit_code, list(tail), offset, signal_name=name, elapsed=elapsed,
            usage=meter.finish(elapsed),
        )  # fmt: skip


def append_log(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        log.warning("could not write to the rule log", log=str(path), error=str(exc))
