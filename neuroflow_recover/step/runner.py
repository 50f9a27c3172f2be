"""The step runner behind ``neuroflow-recover exec``: one attempt of one rule's tool.

It decides whether to start the tool at all (an earlier attempt's non-retryable cause, an
open circuit breaker, a transient failure deferred to ``run``), runs it (``tool``), checks
that every promised output exists, classifies a failure and writes an attempt record.
The contract (exit codes, signals, SLURM time limits): docs/architecture.md, "The step
runner".
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import environment
from ..classify.classes import NON_RETRYABLE
from ..classify.classifier import Classification, classifier_for, make_classification
from ..errors import ExitCode, NeuroflowError
from ..files import read_head_and_tail
from ..logsetup import get_logger
from ..times import utc_now_iso
from ..workflow.config import load_config
from ..workflow.layout import stage_of
from . import workdir
from .accounting import sstat_max_rss_mb
from .attempts import (
    AttemptRecord,
    clear_running,
    mark_running,
    previous_record,
    read_records,
    write_record,
)
from .breaker import BreakerSettings, CircuitBreaker, signature_of
from .learning import add_sample, sample_of
from .messages import (
    afresh_line,
    breaker_line,
    deferred_line,
    fail_fast_line,
    failed_line,
    format_missing_outputs,
    interrupted_line,
    repeated_evidence,
    resuming_line,
    succeeded_line,
    time_limit_line,
)
from .resources import REPEATED, at_stage_cap, failure_line, repeated_failure
from .tool import TAIL_LINES, SignalForwarder, ToolRun, append_log, run_tool, tool_name

log = get_logger(__name__)

CLASSIFY_HEAD = 64 * 1024  # classified part of this attempt's log: its head (startup errors)
CLASSIFY_TAIL = 4 * 1024 * 1024  # ... and its tail (the final error)
SKIPPED_EXIT = int(ExitCode.NOT_STARTED)
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
    work: Path | None = None  # the tool's work directory (kept for a resumable retry)


@dataclass
class StepResult:
    exit_code: int
    record: AttemptRecord
    record_path: Path | None
    summary: str


def parse_wildcards(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["subject=01", "session=02"]`` -> dict; a malformed item is a NeuroflowError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NeuroflowError(f"--wildcards expects NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


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


# ---------------------------------------------------------------------------------------
# config and classifier (never block a job because of them)


def _load_config(workdir: Path, configfiles: tuple[str, ...]) -> Mapping[str, Any] | None:
    try:
        return load_config(workdir, configfiles)
    except Exception as exc:  # noqa: BLE001 - any config problem must not stop the tool
        log.warning(
            "config not loaded; running with the shipped classifier defaults",
            error=f"{exc.__class__.__name__}: {exc}",
        )
        return None


def _read_log_segment(path: Path, offset: int, tail: list[str]) -> str:
    """This attempt's part of the log (from ``offset``): its head and tail if it is big."""
    try:
        return read_head_and_tail(path, CLASSIFY_HEAD, CLASSIFY_TAIL, offset)
    except OSError:
        return "\n".join(tail)


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
        stage=stage_of(req.rule),
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
    rec.ended_at = utc_now_iso()
    try:
        path = write_record(req.workdir, rec)
    except OSError as exc:  # the tool's exit code matters more than the record
        log.error("could not write the attempt record", error=str(exc))
        path = None
    if rec.succeeded and path is not None:
        _learn(req, rec)
    append_log(req.log, summary)
    return StepResult(exit_code, rec, path, summary)


def _learn(req: StepRequest, rec: AttemptRecord) -> None:
    """Add what the job needed to its stage's usage summary (never fails the step)."""
    try:
        sample = sample_of(rec, read_records(req.workdir, req.rule, req.wildcards))
        if sample is not None:
            add_sample(req.workdir, rec.stage, sample)
    except (OSError, ValueError) as exc:
        log.warning("usage summary not updated", error=str(exc))


def _measure(rec: AttemptRecord, run: ToolRun, env: Mapping[str, str]) -> None:
    """The tool's usage into the record; under SLURM the step's own accounting (what its
    memory enforcement sees, the runner and Snakemake's job process included) when larger."""
    if run.usage is None:
        return
    rec.peak_mem_mb = run.usage.peak_mem_mb
    rec.elapsed_s = run.usage.elapsed_s
    rec.cpu_s = run.usage.cpu_s
    rec.usage_source = run.usage.source
    job, step = env.get("SLURM_JOB_ID"), env.get("SLURM_STEP_ID")
    if job and step:
        slurm = sstat_max_rss_mb(job, step)
        if slurm is not None and slurm > (rec.peak_mem_mb or 0):
            rec.peak_mem_mb, rec.usage_source = slurm, "sstat"


def _last_ran(req: StepRequest) -> AttemptRecord | None:
    try:
        ran = [r for r in read_records(req.workdir, req.rule, req.wildcards) if not r.skipped]
    except OSError:
        return None
    return ran[-1] if ran else None


def _prepare_work(req: StepRequest, rec: AttemptRecord) -> None:
    """Keep the work directory for a resumable retry, else start it empty (step/workdir)."""
    if req.work is None:
        return
    resumed, why = workdir.prepare(req.work, _last_ran(req))
    rec.resumed = resumed
    if why is not None:
        line = (resuming_line if resumed else afresh_line)(req.rule, req.attempt, str(req.work), why)
        req.log.parent.mkdir(parents=True, exist_ok=True)
        append_log(req.log, line)


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
    rec = _base_record(req, utc_now_iso())

    prev = previous_attempt(req)
    if prev is not None and prev.error_class in NON_RETRYABLE:
        return _skip(req, rec, prev, fail_fast_line(req.rule, req.attempt, prev), "non_retryable")
    if prev is not None and prev.error_class == "TransientError" and environment.flag(env, environment.DEFER_TRANSIENT):
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

    _prepare_work(req, rec)
    rec.started_at = utc_now_iso()
    command = fill_resources(req.command, req.resources)
    marker = mark_running(req.workdir, rec)
    try:
        with SignalForwarder() as signals:
            run = run_tool(command, req.log, signals, environment.tool_environment(env))
            return _conclude(req, rec, run, cfg, breaker, env, prev)
    finally:
        clear_running(marker)


def _if_repeated(req, rec: AttemptRecord, prev, cls: Classification, cfg) -> Classification:
    """NonRetryableError when this attempt failed like the previous one where another attempt
    cannot help (step/resources.py repeated_failure); otherwise ``cls`` unchanged."""
    current = AttemptRecord(**{**rec.to_dict(), "error_class": cls.error_class,
                               "resource": cls.resource, "evidence": cls.evidence})
    cap = at_stage_cap(cfg, rec.stage, cls.resource, req.resources) if cls.error_class == "ResourceError" else None
    if not repeated_failure(prev, current, at_cap=cap is not None):
        return cls
    where = f"{cls.resource} at the stage's cap ({cap})" if cap is not None else None
    evidence = repeated_evidence(prev.attempt, req.attempt, failure_line(current) or "", where)
    log.warning("the same failure repeated: not retrying it", rule=req.rule, attempt=req.attempt,
                evidence=evidence)
    return make_classification("NonRetryableError", None, REPEATED, evidence)


def _conclude(req, rec, run: ToolRun, cfg, breaker: CircuitBreaker, env, prev=None) -> StepResult:
    tool = tool_name(req.command)
    rec.exit_code = run.exit_code
    rec.tail = run.tail
    _measure(rec, run, env)

    cls: Classification | None = None
    if run.exit_code == 0:
        missing = missing_outputs(req.expect)
        if not missing:
            rec.tail = run.tail
            if req.work is not None:
                workdir.remove(req.work)
            line = succeeded_line(req.rule, req.attempt, run.elapsed, rec.peak_mem_mb)
            return _finish(req, rec, 0, line)
        line = format_missing_outputs(tool, [str(p) for p in missing])
        append_log(req.log, line)
        rec.tail = (run.tail + [line])[-TAIL_LINES:]
        rec.exit_code = 1
    elif run.signal_name is not None:
        if run.signal_name == "SIGTERM" and _slurm_time_limit(
            env, run.elapsed, req.resources.get("runtime")
        ):
            line = time_limit_line(
                tool, env.get("SLURM_JOB_ID"), run.elapsed, req.resources.get("runtime")
            )
            cls = Classification("ResourceError", True, "runtime", "neuroflow:time_limit", line)
        else:
            line = interrupted_line(tool, run.signal_name, run.elapsed)
            cls = Classification("TransientError", True, None, "neuroflow:signal", line)
        append_log(req.log, line)
        rec.tail = (run.tail + [line])[-TAIL_LINES:]

    if cls is None:
        text = _read_log_segment(req.log, run.log_offset, rec.tail)
        cls = classifier_for(cfg).classify(text, exit_code=rec.exit_code)
    cls = _if_repeated(req, rec, prev, cls, cfg)
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

    summary = failed_line(req.rule, req.attempt, rec.exit_code, cls)
    return _finish(req, rec, rec.exit_code or 1, summary)
