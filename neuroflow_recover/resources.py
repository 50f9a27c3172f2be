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
unknown             mem_mb, runtime and threads (RetryableError, success record, no record)
=================  ===========================================================

Growth compounds: attempt 3 after two memory failures gets base x f^2 (capped).
With ``error_handling.cause_aware: false`` every retry grows everything (blind retry),
without reading any record. ``grow()`` is the pure core, shared with the benchmark.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping

from .attempts import AttemptRecord, previous_chain, read_records
from .errors import ConfigError

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


def cause_of(record: AttemptRecord | None) -> str:
    """What an attempt's record says its failure was about (one of CAUSES)."""
    if record is None:
        return UNKNOWN
    if record.skipped or record.error_class in NON_RETRYABLE:
        return FINAL
    if record.error_class == "TransientError":
        return TRANSIENT
    if record.error_class == "ResourceError" and record.resource in (MEMORY, RUNTIME, DISK):
        return record.resource
    return UNKNOWN  # RetryableError, ResourceError without a resource, or a success record


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


def stage_resources(
    cfg: Mapping[str, Any],
    rule: str,
    wildcards: Any,
    attempt: int,
    workdir: str | os.PathLike = ".",
    *,
    stage: str | None = None,
) -> dict[str, int]:
    """``mem_mb``, ``runtime`` (minutes), ``threads``, ``disk_mb`` for this attempt.

    ``stage`` overrides ``RULE_STAGE[rule]`` (for rules outside the shipped workflow).
    """
    base, growth, maximum = stage_settings(cfg, stage or stage_of(rule))
    attempt = int(attempt)
    if attempt <= 1:
        return base
    if not is_cause_aware(cfg):
        return grow(base, growth, maximum, [UNKNOWN] * (attempt - 1), cause_aware=False)
    chain = previous_chain(read_records(workdir, rule, wildcards), attempt)
    return grow(base, growth, maximum, [cause_of(rec) for rec in chain])
