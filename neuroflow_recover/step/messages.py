"""The step runner's lines in rule logs: one wording, which patterns.yaml recognises.

Re-classifying a rule log gives the step runner's verdict: its fail-fast line maps back to
the earlier class (pattern ``neuroflow_not_starting``), the missing-outputs line is a
ValidationError, the time-limit line carries SLURM's own words ``DUE TO TIME LIMIT``.
Each line starts at the beginning of a line.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..classify.classifier import Classification
from .attempts import AttemptRecord

MISSING_SHOWN = 5  # paths named in the missing-outputs line


def format_missing_outputs(tool: str, missing: Iterable[str], limit: int = MISSING_SHOWN) -> str:
    """``neuroflow: <tool> exited 0 but did not write: <path>[, <path> ...]``."""
    paths = [str(p) for p in missing]
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        shown += f", ... ({len(paths) - limit} more)"
    return f"neuroflow: {tool} exited 0 but did not write: {shown}"


def format_not_starting(rule: str, attempt: int, previous: Classification) -> str:
    """``neuroflow: not starting <rule> attempt <n>: attempt <n-1> failed with
    <Class>[/<resource>]: <evidence>`` (fail-fast: the tool is not started)."""
    cause = previous.error_class
    if previous.resource:
        cause += f"/{previous.resource}"
    evidence = " ".join((previous.evidence or "no evidence").split())
    return (
        f"neuroflow: not starting {rule} attempt {attempt}: "
        f"attempt {attempt - 1} failed with {cause}: {evidence}"
    )


def fail_fast_line(rule: str, attempt: int, prev: AttemptRecord) -> str:
    """The fail-fast line for attempt ``attempt`` after the record ``prev``."""
    earlier = Classification(
        prev.error_class or "RetryableError", bool(prev.retryable), prev.resource,
        prev.pattern_id, prev.evidence,
    )  # fmt: skip
    return format_not_starting(rule, attempt, earlier)


def deferred_line(rule: str, attempt: int, prev: AttemptRecord) -> str:
    """Same opening as the fail-fast line (so it classifies as TransientError) + why."""
    return (
        f"{fail_fast_line(rule, attempt, prev)} -- deferred: `neuroflow-recover run` re-runs "
        "transient failures after a backoff"
    )


def breaker_line(rule: str, attempt: int, prev: AttemptRecord, state) -> str:
    """Same opening as the fail-fast line (so it classifies as the earlier class) + why."""
    return (
        f"{fail_fast_line(rule, attempt, prev)} -- circuit breaker open: {state.jobs} jobs "
        f"failed like this within {state.window_minutes:g} minutes "
        f"(threshold {state.threshold}, signature {state.signature.key})"
    )


def repeated_evidence(previous: int, attempt: int, line: str, cap: str | None = None) -> str:
    """``same failure on attempts <n-1> and <n>[ with <resource> at the stage's cap (<v>)]:
    <line>`` (the evidence of a failure found deterministic because it repeated)."""
    where = f" with {cap}" if cap else ""
    return f"same failure on attempts {previous} and {attempt}{where}: {' '.join(line.split())}"


def time_limit_line(tool: str, slurm_job_id: str | None, elapsed: float, runtime) -> str:
    return (
        f"neuroflow: {tool} stopped by SIGTERM DUE TO TIME LIMIT of SLURM job "
        f"{slurm_job_id} after {elapsed:.0f} s (runtime {runtime} min)"
    )


def interrupted_line(tool: str, signal_name: str, elapsed: float) -> str:
    return f"neuroflow: {tool} interrupted by {signal_name} after {elapsed:.0f} s (not a time limit)"


def cannot_start_line(tool: str, reason: str) -> str:
    return f"neuroflow: cannot start {tool}: {reason}"


def succeeded_line(rule: str, attempt: int, elapsed: float, peak_mem_mb: int | None = None) -> str:
    peak = f" (peak memory {peak_mem_mb} MB)" if peak_mem_mb is not None else ""
    return f"neuroflow: {rule} attempt {attempt} succeeded in {elapsed:.1f} s{peak}"


def resuming_line(rule: str, attempt: int, work: str, why: str) -> str:
    """The work directory of an earlier attempt is kept: the tool may resume from it."""
    return f"neuroflow: resuming {rule} attempt {attempt} in its work directory {work} ({why})"


def afresh_line(rule: str, attempt: int, work: str, why: str) -> str:
    """An earlier attempt's work directory was removed: the tool starts from scratch."""
    return f"neuroflow: starting {rule} attempt {attempt} afresh: removed its work directory {work} ({why})"


def failed_line(rule: str, attempt: int, exit_code: int | None, found: Classification) -> str:
    """``neuroflow: <rule> attempt <n> failed (exit <code>): <Class>[/<resource>]
    [<pattern>]: <evidence>`` (re-classifies to the same class)."""
    what = found.error_class + (f"/{found.resource}" if found.resource else "")
    return (
        f"neuroflow: {rule} attempt {attempt} failed (exit {exit_code}): {what}"
        f" [{found.pattern_id or 'default'}]: {found.evidence or '(no evidence)'}"
    )
