"""Resources of one attempt of a rule: base values from the config, grown by cause.

Attempt 1 gets ``stages.<stage>.resources`` and touches no file (this runs for every job
of a large DAG). Attempt n > 1 looks at the attempt records of the previous attempts of
this invocation (see ``attempts.previous_chain``) and, per failed attempt, multiplies only
what that failure was about by ``stages.<stage>.growth``, capped by ``stages.<stage>.max``:

=================  ===========================================================
previous cause      grows
=================  ===========================================================
memory              mem_mb
runtime             runtime and threads (threads factor is 1.0 in the shipped config)
disk                disk_mb
transient           nothing (same resources again)
final               nothing (non-retryable or skipped; the step runner will not start)
unknown             mem_mb, runtime and threads (RetryableError, success record, no record
                    and no usable SLURM log)
=================  ===========================================================

Growth compounds: attempt 3 after two memory failures gets base x f^2 (capped).
With ``error_handling.cause_aware: false`` every retry grows everything (blind retry),
without reading any record. ``grow()`` is the pure core, shared with the benchmark.

Attempts killed by SLURM (no record)
------------------------------------
When SLURM kills a job for memory (OverMemoryKill, cgroup OOM) it also kills the step
runner, so that attempt writes no record. For the attempts at the END of the chain that left
no record (usually just attempt n-1) the SLURM job logs of this job are consulted instead:
``<slurm logdir>/rule_<rule>/<wildcard values joined by _>/<slurm job id>.log``
(snakemake-executor-plugin-slurm 2.8; default logdir ``.snakemake/slurm_logs`` of the
workflow directory; the values in the order of the given wildcards, which is the rule's
order when Snakemake passes them). One directory listing; only logs modified after the
newest record of this job (an older run's logs are not used), not the log of the SLURM job
we run in (``$SLURM_JOB_ID``: the job step re-evaluates the resources of its own attempt)
and not a log whose job id a record names. The newest such log is attempt n-1's, the next
one attempt n-2's, and so on; each one's last ``SLURM_TAIL_BYTES`` are classified
(``Classifier.from_config``) and that cause is used. No usable log: unknown, as before.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from .attempts import AttemptRecord, previous_chain, read_records, wildcards_dict
from .classifier import Classification, Classifier, decode, default_classifier
from .errors import ConfigError
from .logsetup import get_logger

try:  # layout owns the rule -> stage mapping
    from .layout import RULE_STAGE
except ImportError:  # pragma: no cover - only while layout.py does not exist yet
    RULE_STAGE = {
        "heudiconv_convert": "bids_conversion",
        "qsiprep_preprocess": "qsiprep",
        "qsirecon_reconstruct": "qsirecon",
        "qsiparc_parcellate": "qsiparc",
    }

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
NON_RETRYABLE = frozenset({"ValidationError", "ConfigurationError", "NonRetryableError"})

# snakemake-executor-plugin-slurm 2.8: <logdir>/rule_<rule>/<wildcard values>/<job id>.log
SLURM_LOGDIR = Path(".snakemake") / "slurm_logs"
SLURM_TAIL_BYTES = 256 * 1024  # classified from the end of a SLURM log

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


def stage_of(rule: str) -> str:
    try:
        return RULE_STAGE[rule]
    except KeyError:
        raise ConfigError(
            f"rule {rule!r} has no stage; known rules: {', '.join(sorted(RULE_STAGE))}"
        ) from None


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


def slurm_log_dir(
    workdir: str | os.PathLike,
    rule: str,
    wildcards: Any,
    logdir: str | os.PathLike | None = None,
) -> Path:
    """The plugin's log directory of one job: ``<logdir>/rule_<rule>/<values joined by _>``.

    ``logdir`` (the plugin's ``slurm-logdir``) defaults to ``.snakemake/slurm_logs``; a
    relative one is relative to ``workdir``. The wildcard values keep the given order.
    """
    base = Path(logdir) if logdir else SLURM_LOGDIR
    if not base.is_absolute():
        base = Path(workdir) / base
    values = "_".join(wildcards_dict(wildcards).values()).replace("/", "_")
    directory = base / f"rule_{rule}"
    return directory / values if values else directory


def _timestamp(iso: str | None) -> float | None:
    try:
        moment = datetime.fromisoformat(iso)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _newest_record_time(records: Iterable[AttemptRecord]) -> float | None:
    times = [
        t
        for rec in records
        for t in (_timestamp(rec.ended_at), _timestamp(rec.started_at))
        if t is not None
    ]
    return max(times) if times else None


def _tail(path: Path, size: int = SLURM_TAIL_BYTES) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        fh.seek(max(0, end - size))
        return decode(fh.read(size))


def _classifier(cfg: Mapping[str, Any]) -> Classifier:
    try:
        return Classifier.from_config(cfg)
    except ConfigError as exc:  # the workflow validated its config; never block a retry
        log.warning("config patterns unusable, shipped patterns only", error=str(exc))
        return default_classifier()


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
    newer_than = _newest_record_time(records)
    skip = {rec.slurm_job_id for rec in records if rec.slurm_job_id}
    own = os.environ.get("SLURM_JOB_ID")
    if own:
        skip.add(own)
    candidates: list[tuple[float, str, Path]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".log"):
                    continue
                job_id = entry.name[: -len(".log")]
                if job_id in skip:
                    continue
                try:
                    if not entry.is_file():
                        continue
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                if newer_than is not None and mtime <= newer_than:
                    continue
                candidates.append((mtime, job_id, Path(entry.path)))
    except OSError:  # no SLURM logs (a local run) or unreadable: the cause stays unknown
        return []
    candidates.sort(reverse=True)
    causes: list[SlurmLogCause] = []
    classifier = None
    for _, job_id, path in candidates[:count]:
        try:
            text = _tail(path)
        except OSError as exc:
            log.warning("cannot read SLURM log", path=str(path), error=str(exc))
            break  # keep the newest-first alignment: older attempts stay unknown
        classifier = classifier or _classifier(cfg)
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
) -> dict[str, int]:
    """``mem_mb``, ``runtime`` (minutes), ``threads``, ``disk_mb`` for this attempt.

    ``stage`` overrides ``RULE_STAGE[rule]`` (for rules outside the shipped workflow);
    ``slurm_logdir`` is the plugin's ``slurm-logdir`` when not the default.
    """
    base, growth, maximum = stage_settings(cfg, stage or stage_of(rule))
    attempt = int(attempt)
    if attempt <= 1:
        return base
    if not is_cause_aware(cfg):
        return grow(base, growth, maximum, [UNKNOWN] * (attempt - 1), cause_aware=False)
    causes = chain_causes(cfg, rule, wildcards, attempt, workdir, slurm_logdir)
    return grow(base, growth, maximum, causes)
