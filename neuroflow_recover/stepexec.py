"""The step runner behind ``neuroflow-recover exec``: run one tool for one attempt of a rule.

It runs the tool without a shell, stdout and stderr merged and streamed line by line into
the rule log (the last ``TAIL_LINES`` lines are also kept in memory), checks that every
promised output exists, classifies a failure and writes an attempt record (success too)
atomically under ``.neuroflow/attempts/``.

Before starting the tool it looks at the record of the previous attempt:

* the previous attempt failed with a non-retryable class -> fail fast: the tool is not
  started, a ``skipped`` record carries the earlier cause, exit code 3;
* the previous attempt failed with a signature whose circuit breaker is open
  (``breaker.py``) -> the same, naming the breaker;
* the previous attempt failed with a TransientError and ``NEUROFLOW_DEFER_TRANSIENT=1`` is
  set (``neuroflow-recover run`` sets it for its Snakemake) -> deferred: not started, a
  ``skipped`` + ``deferred`` record carries the transient cause (still retryable), exit
  code 3. Snakemake's remaining immediate retries end at once and ``run`` re-runs the job
  after its policy's backoff instead. Without the variable (a plain ``snakemake``),
  Snakemake's own immediate retries run the tool as before.

Signals: SIGTERM / SIGINT / SIGHUP are forwarded to the tool's process group; if the tool
has not ended ``KILL_GRACE_SECONDS`` later it gets SIGKILL, and the record is written in
any case. A SIGTERM under SLURM (``SLURM_JOB_ID`` set) counts as the job's TIME LIMIT when
it arrives at the end of the job: at or after ``SLURM_JOB_END_TIME`` - 90 s when SLURM sets
that variable, otherwise when the tool ran at least the ``--runtime`` limit minus a margin
(10 %, at least 30 s, at most 5 min; the tool starts a little after the job, so the elapsed
time is a lower bound). That is a ResourceError/runtime and the runner writes a line with
SLURM's own words ``DUE TO TIME LIMIT`` so the rule log classifies the same way. Any other
signal (scancel, preemption, Ctrl-C) is a TransientError: the next attempt keeps its
resources.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .attempts import AttemptRecord, previous_record, utc_now, write_record
from .breaker import BreakerSettings, CircuitBreaker, signature_of
from .classifier import Classification, format_missing_outputs, format_not_starting
from .errors import NeuroflowError
from .logsetup import get_logger

log = get_logger(__name__)

TAIL_LINES = 50
CLASSIFY_HEAD = 64 * 1024  # classified part of this attempt's log: its head (startup errors)
CLASSIFY_TAIL = 4 * 1024 * 1024  # ... and its tail (the final error)
KILL_GRACE_SECONDS = 10.0  # after forwarding a signal, SIGKILL the tool if it is still alive
READER_GRACE_SECONDS = 5.0  # after the tool exits, wait this long for its pipe to close
SKIPPED_EXIT = 3
DEFER_TRANSIENT_ENV = "NEUROFLOW_DEFER_TRANSIENT"
NON_RETRYABLE = frozenset({"ValidationError", "ConfigurationError", "NonRetryableError"})
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Placeholders a rule may put in the tool's arguments; the runner fills in THIS attempt's
# resources. Snakemake re-evaluates resources for a retry but not params, so a tool command
# built in params (QSIPrep's --mem / --nprocs) would otherwise keep attempt 1's values.
RESOURCE_TOKENS = {
    "@NEUROFLOW_MEM_MB@": "mem_mb",
    "@NEUROFLOW_THREADS@": "threads",
    "@NEUROFLOW_RUNTIME@": "runtime",
    "@NEUROFLOW_DISK_MB@": "disk_mb",
}


@dataclass
class StepRequest:
    rule: str
    wildcards: dict[str, str]
    attempt: int
    log: Path
    command: list[str]
    expect: list[Path] = field(default_factory=list)
    resources: dict[str, int] = field(default_factory=dict)
    workdir: Path = Path(".")
    configfiles: tuple[str, ...] = ()


@dataclass
class StepResult:
    exit_code: int
    record: AttemptRecord
    record_path: Path | None
    summary: str


@dataclass
class _Run:
    """What running the tool produced."""

    exit_code: int
    tail: list[str]
    log_offset: int
    signal_name: str | None = None
    elapsed: float = 0.0
    start_error: str | None = None


def parse_wildcards(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["subject=01", "session=02"]`` -> dict; a malformed item is a NeuroflowError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NeuroflowError(f"--wildcards expects NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def stage_for(rule: str) -> str:
    from .resources import RULE_STAGE

    return RULE_STAGE.get(rule, rule)


def tool_name(command: list[str]) -> str:
    return os.path.basename(command[0]) if command else "?"


def missing_outputs(paths: list[Path]) -> list[Path]:
    """Promised outputs that do not exist (files must also be non-empty)."""
    missing = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            missing.append(path)
            continue
        if path.is_file() and st.st_size == 0:
            missing.append(path)
    return missing


def missing_outputs_line(tool: str, paths: list[Path]) -> str:
    """``neuroflow: <tool> exited 0 but did not write: <path>, <path>`` (classifier wording)."""
    return format_missing_outputs(tool, [str(p) for p in paths])


def fail_fast_line(rule: str, attempt: int, prev: AttemptRecord) -> str:
    """``neuroflow: not starting <rule> attempt <n>: attempt <n-1> failed with <Class>: ...``

    The classifier maps it back to the earlier class (pattern ``neuroflow_not_starting``).
    """
    earlier = Classification(
        prev.error_class or "RetryableError", bool(prev.retryable), prev.resource,
        prev.pattern_id, prev.evidence,
    )
    return format_not_starting(rule, attempt, earlier)


def deferred_line(rule: str, attempt: int, prev: AttemptRecord) -> str:
    """Same opening as the fail-fast line (so it classifies as TransientError) + why."""
    return (
        f"{fail_fast_line(rule, attempt, prev)} -- deferred: `neuroflow-recover run` re-runs "
        "transient failures after a backoff"
    )


def defer_transient(env: Mapping[str, str]) -> bool:
    return (env.get(DEFER_TRANSIENT_ENV) or "").strip().lower() in ("1", "true", "yes")


def breaker_line(rule: str, attempt: int, prev: AttemptRecord, state) -> str:
    """Same opening as the fail-fast line (so it classifies as the earlier class) + why."""
    return (
        f"{fail_fast_line(rule, attempt, prev)} -- circuit breaker open: {state.jobs} jobs "
        f"failed like this within {state.window_minutes:g} minutes "
        f"(threshold {state.threshold}, signature {state.signature.key})"
    )


# ---------------------------------------------------------------------------------------
# config and classifier (never block a job because of them)


def _load_config(workdir: Path, configfiles: tuple[str, ...]) -> Mapping[str, Any] | None:
    try:
        from .config import load_config

        return load_config(workdir, configfiles)
    except Exception as exc:  # noqa: BLE001 - any config problem must not stop the tool
        log.warning(
            "config not loaded; running with the shipped classifier defaults",
            error=f"{exc.__class__.__name__}: {exc}",
        )
        return None


def _classifier(cfg: Mapping[str, Any] | None):
    from .classifier import Classifier

    if cfg is not None:
        try:
            return Classifier.from_config(cfg)
        except Exception as exc:  # noqa: BLE001
            log.warning("classifier config rejected; using the shipped patterns", error=str(exc))
    return Classifier.from_config({})


def _classify(cfg, text: str, exit_code: int | None) -> Classification:
    return _classifier(cfg).classify(text, exit_code=exit_code)


# ---------------------------------------------------------------------------------------
# running the tool


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


class _SignalForwarder:
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


def _run_tool(
    command: list[str],
    log_path: Path,
    signals: _SignalForwarder,
    env: Mapping[str, str] | None = None,
) -> _Run:
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
            line = f"neuroflow: cannot start {tool_name(command)}: {exc.strerror or exc}"
            logfile.write((line + "\n").encode())
            tail.append(line)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return _Run(code, list(tail), offset, start_error=line)
        signals.pgid = proc.pid
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
        return _Run(exit_code, list(tail), offset, signal_name=name, elapsed=elapsed)


def _read_log_segment(path: Path, offset: int, tail: list[str]) -> str:
    """This attempt's part of the log (from ``offset``): its head and tail if it is big."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(offset)
            if size - offset <= CLASSIFY_HEAD + CLASSIFY_TAIL:
                data = fh.read()
            else:
                data = fh.read(CLASSIFY_HEAD) + b"\n"
                fh.seek(size - CLASSIFY_TAIL)
                data += fh.read()
        return data.decode("utf-8", errors="replace")
    except OSError:
        return "\n".join(tail)


def _append_log(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        log.warning("could not write to the rule log", log=str(path), error=str(exc))


def _slurm_time_limit(env: Mapping[str, str], elapsed: float, runtime_minutes: int | None):
    """True when a SIGTERM under SLURM is the job's time limit (see the module doc)."""
    if not env.get("SLURM_JOB_ID"):
        return False
    end = env.get("SLURM_JOB_END_TIME")
    if end and end.strip().isdigit():
        return time.time() >= int(end) - 90
    if not runtime_minutes:
        return False
    limit = runtime_minutes * 60
    margin = min(300.0, max(30.0, 0.1 * limit))
    return elapsed >= limit - margin


# ---------------------------------------------------------------------------------------
# the step


def _base_record(req: StepRequest, started_at: str) -> AttemptRecord:
    return AttemptRecord(
        rule=req.rule,
        stage=stage_for(req.rule),
        wildcards=dict(req.wildcards),
        attempt=req.attempt,
        started_at=started_at,
        ended_at=started_at,
        exit_code=None,
        error_class=None,
        retryable=None,
        resource=None,
        pattern_id=None,
        evidence=None,
        resources=dict(req.resources),
        host=socket.gethostname(),
        slurm_job_id=os.environ.get("SLURM_JOB_ID") or None,
        log=str(req.log),
    )


def _finish(req: StepRequest, rec: AttemptRecord, exit_code: int, summary: str) -> StepResult:
    rec.ended_at = utc_now()
    try:
        path = write_record(req.workdir, rec)
    except OSError as exc:  # the tool's exit code matters more than the record
        log.error("could not write the attempt record", error=str(exc))
        path = None
    _append_log(req.log, summary)
    return StepResult(exit_code, rec, path, summary)


def _skip(req: StepRequest, rec: AttemptRecord, prev: AttemptRecord, line: str, reason: str):
    rec.skipped = True
    rec.deferred = reason == "deferred"
    rec.exit_code = SKIPPED_EXIT
    rec.error_class = prev.error_class
    rec.retryable = prev.retryable if reason in ("breaker_open", "deferred") else False
    rec.resource = prev.resource
    rec.pattern_id = prev.pattern_id
    rec.evidence = prev.evidence
    rec.tail = [line]
    req.log.parent.mkdir(parents=True, exist_ok=True)
    return _finish(req, rec, SKIPPED_EXIT, line)


def previous_attempt(req: StepRequest) -> AttemptRecord | None:
    if req.attempt <= 1:
        return None
    try:
        return previous_record(req.workdir, req.rule, req.wildcards, req.attempt)
    except OSError as exc:
        log.warning("could not read earlier attempt records", error=str(exc))
        return None


def fill_resources(command: list[str], resources: Mapping[str, int]) -> list[str]:
    """Replace the RESOURCE_TOKENS in the tool's arguments by this attempt's resources."""
    filled = []
    for arg in command:
        for token, key in RESOURCE_TOKENS.items():
            if token in arg:
                if resources.get(key) is None:
                    raise NeuroflowError(f"the tool's arguments use {token} but exec got no {key}")
                arg = arg.replace(token, str(resources[key]))
        filled.append(arg)
    return filled


def run_step(req: StepRequest, env: Mapping[str, str] | None = None) -> StepResult:
    """Run one attempt of one rule's tool; see the module doc. Returns the exit code to use."""
    if not req.command:
        raise NeuroflowError("exec needs the tool's command line after --")
    if req.attempt < 1:
        raise NeuroflowError(f"--attempt must be 1 or more, got {req.attempt}")
    env = os.environ if env is None else env
    rec = _base_record(req, utc_now())

    prev = previous_attempt(req)
    if prev is not None and prev.error_class in NON_RETRYABLE:
        return _skip(req, rec, prev, fail_fast_line(req.rule, req.attempt, prev), "non_retryable")
    if prev is not None and prev.error_class == "TransientError" and defer_transient(env):
        return _skip(req, rec, prev, deferred_line(req.rule, req.attempt, prev), "deferred")

    cfg = _load_config(req.workdir, req.configfiles)
    breaker = CircuitBreaker(req.workdir, BreakerSettings.from_config(cfg))
    if prev is not None and not prev.succeeded and breaker.settings.enabled:
        sig = signature_of(prev.error_class, prev.pattern_id, prev.evidence)
        if sig is not None:
            state = breaker.state(sig)
            if state.open:
                line = breaker_line(req.rule, req.attempt, prev, state)
                return _skip(req, rec, prev, line, "breaker_open")

    rec.started_at = utc_now()
    command = fill_resources(req.command, req.resources)
    with _SignalForwarder() as signals:
        run = _run_tool(command, req.log, signals, env)
        return _conclude(req, rec, run, cfg, breaker, env)


def _conclude(req, rec, run: _Run, cfg, breaker: CircuitBreaker, env) -> StepResult:
    tool = tool_name(req.command)
    rec.exit_code = run.exit_code
    rec.tail = run.tail

    cls: Classification | None = None
    if run.exit_code == 0:
        missing = missing_outputs(req.expect)
        if not missing:
            rec.tail = run.tail
            return _finish(
                req, rec, 0,
                f"neuroflow: {req.rule} attempt {req.attempt} succeeded in {run.elapsed:.1f} s",
            )
        line = missing_outputs_line(tool, missing)
        _append_log(req.log, line)
        rec.tail = (run.tail + [line])[-TAIL_LINES:]
        rec.exit_code = 1
    elif run.signal_name is not None:
        if run.signal_name == "SIGTERM" and _slurm_time_limit(
            env, run.elapsed, req.resources.get("runtime")
        ):
            line = (
                f"neuroflow: {tool} stopped by SIGTERM DUE TO TIME LIMIT of SLURM job "
                f"{env.get('SLURM_JOB_ID')} after {run.elapsed:.0f} s "
                f"(runtime {req.resources.get('runtime')} min)"
            )
            cls = Classification("ResourceError", True, "runtime", "neuroflow:time_limit", line)
        else:
            line = (
                f"neuroflow: {tool} interrupted by {run.signal_name} "
                f"after {run.elapsed:.0f} s (not a time limit)"
            )
            cls = Classification("TransientError", True, None, "neuroflow:signal", line)
        _append_log(req.log, line)
        rec.tail = (run.tail + [line])[-TAIL_LINES:]

    if cls is None:
        text = _read_log_segment(req.log, run.log_offset, rec.tail)
        cls = _classify(cfg, text, rec.exit_code)
    rec.error_class = cls.error_class
    rec.retryable = cls.retryable
    rec.resource = cls.resource
    rec.pattern_id = cls.pattern_id
    rec.evidence = cls.evidence

    sig = signature_of(cls.error_class, cls.pattern_id, cls.evidence)
    if sig is not None and breaker.settings.enabled:
        try:
            breaker.record_failure(sig, req.rule, req.wildcards)
        except OSError as exc:
            log.warning("circuit breaker state not updated", error=str(exc))

    what = cls.error_class + (f"/{cls.resource}" if cls.resource else "")
    summary = (
        f"neuroflow: {req.rule} attempt {req.attempt} failed (exit {rec.exit_code}): {what}"
        f" [{cls.pattern_id or 'default'}]: {cls.evidence or '(no evidence)'}"
    )
    return _finish(req, rec, rec.exit_code or 1, summary)
