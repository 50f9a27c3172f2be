"""Resources of one attempt of a rule: base values from the config, grown by cause.

Attempt 1 gets ``stages.<stage>.resources`` and touches no file (this runs for every job of
a large DAG). Attempt n > 1 grows only what the previous attempts' failures were about, as
their attempt records (or, for attempts SLURM killed without a record, their SLURM job
logs) tell: docs/architecture.md, "Attempts and retries". ``grow()`` is the pure core,
shared with the benchmark, like ``repeated_failure()``: a failure that repeats when growing
cannot help any more is deterministic, and the chain stops there.
"""


from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..classify.classes import NON_RETRYABLE
from ..classify.classifier import Classification, classifier_for
from ..errors import ConfigError
from ..files import read_tail
from ..logs.slurm import new_slurm_logs, slurm_log_dir
from ..logsetup import get_logger
from ..times import parse_iso
from ..workflow.layout import stage_of, wildcards_dict
from .attempts import AttemptRecord, previous_chain, read_records
from .breaker import normalise_evidence

RESOURCE_KEYS = ("mem_mb", "runtime", "threads", "disk_mb")

MEMORY, RUNTIME, DISK, TRANSIENT, FINAL, UNKNOWN = (
    "memory",
    "runtime",
    "disk",
    "transient",
    "final",
    "unknown",
)
CAUSES = (MEMORY, RUNTIME, DISK, TRANSIENT, FINAL, UNKNOWN)

# which resources one failure of each cause grows (cause-aware mode)
GROWS: dict[str, tuple[str, ...]] = {
    MEMORY: ("mem_mb",),
    RUNTIME: ("runtime", "threads"),
    DISK: ("disk_mb",),
    TRANSIENT: (),
    FINAL: (),
    UNKNOWN: ("mem_mb", "runtime", "threads"),
}

SLURM_TAIL_BYTES = 256 * 1024  # classified from the end of a SLURM log
RESOURCE_KEY = {MEMORY: "mem_mb", RUNTIME: "runtime", DISK: "disk_mb"}
REPEATED = "neuroflow:repeated"  # pattern id of a failure found deterministic by repeating

log = get_logger(__name__)


def _cause(error_class: str | None, resource: str | None, skipped: bool = False) -> str:
    if skipped or error_class in NON_RETRYABLE:
        return FINAL
    if error_class == "TransientError":
        return TRANSIENT
    if error_class == "ResourceError" and resource in (MEMORY, RUNTIME, DISK):
        return resource
    return UNKNOWN  # RetryableError, ResourceError without a resource, or a success record


def cause_of(record: AttemptRecord | None) -> str:
    """What an attempt's record says its failure was about (one of CAUSES)."""
    if record is None:
        return UNKNOWN
    return _cause(record.error_class, record.resource, record.skipped)


def cause_of_classification(classification: Classification) -> str:
    """The cause (one of CAUSES) of a classified failure text, e.g. a SLURM log."""
    return _cause(classification.error_class, classification.resource)


def failure_line(record: AttemptRecord) -> str | None:
    """What an attempt's failure looked like: its evidence line, else the last line of the
    tool's output, else its exit code (an unknown failure has no evidence of its own)."""
    if record.evidence and record.evidence.strip():
        return record.evidence.strip()
    for line in reversed(record.tail or []):
        if line.strip():
            return line.strip()
    return f"exit code {record.exit_code}" if record.exit_code is not None else None


def same_failure(first: AttemptRecord, second: AttemptRecord) -> bool:
    """Both failed alike: the same failure line once numbers, paths, times and ids are masked."""
    a, b = failure_line(first), failure_line(second)
    return a is not None and b is not None and normalise_evidence(a) == normalise_evidence(b)


def repeated_failure(previous: AttemptRecord | None, current: AttemptRecord, at_cap: bool) -> bool:
    """True when ``current`` repeats ``previous`` where another attempt cannot help: an unknown
    failure (RetryableError) twice, though the retry had more resources; or the same
    ResourceError again with its resource already at the stage's cap (``at_cap``)."""
    if previous is None or previous.skipped or previous.error_class != current.error_class:
        return False
    if current.error_class == "RetryableError":
        return same_failure(previous, current)
    if current.error_class == "ResourceError" and at_cap and previous.resource == current.resource:
        return same_failure(previous, current)
    return False


def at_stage_cap(cfg: Mapping[str, Any] | None, stage: str, resource: str | None, resources: Mapping[str, int]) -> int | None:
    """The stage's cap of ``resource`` when ``resources`` already reached it, else None."""
    key = RESOURCE_KEY.get(resource or "")
    if not cfg or key is None or resources.get(key) is None:
        return None
    try:
        _, _, maximum = stage_settings(cfg, stage)
    except ConfigError:
        return None
    cap = maximum.get(key)
    return int(cap) if cap is not None and int(resources[key]) >= int(cap) else None


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


def grow(
    base: Mapping[str, int],
    growth: Mapping[str, float],
    maximum: Mapping[str, int],
    causes: Iterable[str],
    cause_aware: bool = True,
) -> dict[str, int]:
    """Resources after the failures ``causes`` (one per previous attempt, oldest first).

    Each resource is base x factor^(number of failures that grow it), capped by ``maximum``
    (never below base). Blind mode (``cause_aware=False``) grows every resource per failure.
    """
    counts = dict.fromkeys(RESOURCE_KEYS, 0)
    for cause in causes:
        for key in RESOURCE_KEYS if not cause_aware else GROWS[cause]:
            counts[key] += 1
    out = {}
    for key in RESOURCE_KEYS:
        value = int(base[key])
        if counts[key]:
            grown = _round(value * float(growth.get(key, 1.0)) ** counts[key])
            cap = maximum.get(key)
            if cap is not None:
                grown = min(grown, int(cap))
            value = max(value, grown)
        out[key] = value
    return out


def stage_settings(cfg: Mapping[str, Any], stage: str) -> tuple[dict, dict, dict]:
    """(resources, growth, max) of one stage, with a clear error when the config lacks them."""
    try:
        stage_cfg = cfg["stages"][stage]
        base = stage_cfg["resources"]
        base = {key: int(base[key]) for key in RESOURCE_KEYS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"config stages.{stage}.resources must set {', '.join(RESOURCE_KEYS)} "
            f"as integers ({exc.__class__.__name__}: {exc})"
        ) from None
    growth = dict(stage_cfg.get("growth") or {})
    maximum = dict(stage_cfg.get("max") or {})
    return base, growth, maximum


def is_cause_aware(cfg: Mapping[str, Any]) -> bool:
    return bool((cfg.get("error_handling") or {}).get("cause_aware", True))


# ----------------------------------------------------------------------------- SLURM logs


@dataclass(frozen=True)
class SlurmLogCause:
    """What one SLURM job log of an attempt without a record says about its failure."""

    path: Path
    slurm_job_id: str
    classification: Classification
    cause: str  # one of CAUSES


def _newest_record_time(records: Iterable[AttemptRecord]) -> float | None:
    times = [
        moment.timestamp()
        for rec in records
        for moment in (parse_iso(rec.ended_at), parse_iso(rec.started_at))
        if moment is not None
    ]
    return max(times) if times else None


def slurm_log_causes(
    cfg: Mapping[str, Any],
    rule: str,
    wildcards: Any,
    records: list[AttemptRecord],
    count: int,
    workdir: str | os.PathLike = ".",
    logdir: str | os.PathLike | None = None,
) -> list[SlurmLogCause]:
    """Causes of the last ``count`` attempts that left no record, from their SLURM logs.

    Newest log first (attempt n-1, then n-2, ...); at most ``count``, possibly fewer (none
    when there is no log directory). Candidates: ``*.log`` files of this job's log directory
    modified after the newest of ``records`` (this job's records), except the log of the
    SLURM job we run in and logs whose job id a record names. One directory listing and one
    tail read per returned log.
    """
    if count <= 0:
        return []
    directory = slurm_log_dir(workdir, rule, wildcards, logdir)
    skip = {rec.slurm_job_id for rec in records if rec.slurm_job_id}
    own = os.environ.get("SLURM_JOB_ID")
    if own:
        skip.add(own)
    candidates = new_slurm_logs(directory, _newest_record_time(records), skip)
    causes: list[SlurmLogCause] = []
    classifier = None
    for job_id, path in candidates[:count]:
        try:
            text, _ = read_tail(path, SLURM_TAIL_BYTES)
        except OSError as exc:
            log.warning("cannot read SLURM log", path=str(path), error=str(exc))
            break  # keep the newest-first alignment: older attempts stay unknown
        classifier = classifier or classifier_for(cfg)
        found = classifier.classify(text)
        causes.append(SlurmLogCause(path, job_id, found, cause_of_classification(found)))
    return causes


def chain_causes(
    cfg: Mapping[str, Any],
    rule: str,
    wildcards: Any,
    attempt: int,
    workdir: str | os.PathLike = ".",
    slurm_logdir: str | os.PathLike | None = None,
) -> list[str]:
    """The cause of each previous attempt (1 .. attempt-1) of this invocation, oldest first.

    From the attempt records; the trailing attempts without a record from their SLURM logs.
    """
    records = read_records(workdir, rule, wildcards)
    chain = previous_chain(records, attempt)
    causes = [cause_of(rec) for rec in chain]
    missing = 0
    for rec in reversed(chain):
        if rec is not None:
            break
        missing += 1
    found = slurm_log_causes(cfg, rule, wildcards, records, missing, workdir, slurm_logdir)
    for offset, item in enumerate(found, start=1):
        number = attempt - offset
        causes[number - 1] = item.cause
        log.info(
            "attempt left no record; cause from its SLURM log",
            rule=rule,
            wildcards=wildcards_dict(wildcards),
            attempt=number,
            slurm_log=str(item.path),
            cause=item.cause,
            error_class=item.classification.error_class,
            pattern_id=item.classification.pattern_id,
        )
    return causes


def stage_resources(
    cfg: Mapping[str, Any],
    rule: str,
    wildcards: Any,
    attempt: int,
    workdir: str | os.PathLike = ".",
    *,
    stage: str | None = None,
    slurm_logdir: str | os.PathLike | None = None,
    plan: Any = None,
) -> dict[str, int]:
    """``mem_mb``, ``runtime`` (minutes), ``threads``, ``disk_mb`` for this attempt.

    ``stage`` overrides ``RULE_STAGE[rule]`` (for rules outside the shipped workflow);
    ``slurm_logdir`` is the plugin's ``slurm-logdir`` when not the default; ``plan`` (a
    ``step.resource_plan.ResourcePlan``) gives attempt 1 (learned, raised by billing) and raises
    the retries grown from it.
    """
    stage = stage or stage_of(rule, strict=True)
    base, growth, maximum = stage_settings(cfg, stage)
    if plan is not None:
        base = plan.first_attempt(stage, base)
    attempt = int(attempt)
    if attempt <= 1:
        return base
    if not is_cause_aware(cfg):
        grown = grow(base, growth, maximum, [UNKNOWN] * (attempt - 1), cause_aware=False)
    else:
        causes = chain_causes(cfg, rule, wildcards, attempt, workdir, slurm_logdir)
        grown = grow(base, growth, maximum, causes)
    return plan.adjust(grown, attempt, maximum) if plan is not None else grown
