"""The first attempt of every stage for one Snakemake process, and what retries add to it.

Made once per process (``resource_plan``): the stage's ``resources`` from the config, or
what its history learned (``step/learning.py``), with memory raised to the free share where
the cluster's billing allows (``step/billing.py``) and runtime within the partition's
MaxTime. The main process hands its plan to its jobs in ``NEUROFLOW_RESOURCE_PLAN`` (SLURM
jobs inherit the environment; their own Snakemake must ask for the same resources even
if the history grew meanwhile).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .. import environment
from ..errors import ConfigError
from ..logsetup import get_logger
from ..workflow.layout import RULE_STAGE
from .billing import NO_BILLING, BillingModel, billing_model
from .learning import LearnSettings, learned_request, read_samples
from .resources import stage_settings

log = get_logger(__name__)

SLURM_EXECUTOR = "slurm"


@dataclass(frozen=True)
class ResourcePlan:
    """First-attempt resources per stage, how many samples each learned from (0 = the
    config's), and the billing model retries are raised by."""

    first: dict[str, dict[str, int]]
    samples: dict[str, int] = field(default_factory=dict)
    billing: BillingModel = NO_BILLING

    def first_attempt(self, stage: str, base: Mapping[str, int]) -> dict[str, int]:
        return dict(self.first.get(stage) or base)

    def adjust(self, resources: Mapping[str, int], attempt: int, cap: Mapping[str, int]) -> dict[str, int]:
        """Resources of a retry after growth: memory raised where billing makes it free,
        runtime within the partition's MaxTime."""
        return within_billing(resources, attempt, cap, self.billing)

    def to_json(self) -> str:
        data = {"first": self.first, "samples": self.samples, "billing": self.billing.to_dict()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ResourcePlan":
        data = json.loads(text)
        return cls(
            {s: {k: int(v) for k, v in r.items()} for s, r in data["first"].items()},
            {s: int(n) for s, n in (data.get("samples") or {}).items()},
            BillingModel.from_dict(data.get("billing") or {"model": "none"}),
        )


def within_billing(
    resources: Mapping[str, int], attempt: int, cap: Mapping[str, int], billing: BillingModel
) -> dict[str, int]:
    """Memory raised to the free share (when the billing model raises this attempt, never
    above the cap), runtime within the partition's MaxTime."""
    out = dict(resources)
    free = billing.free_mem_mb(int(out.get("threads") or 1)) if billing.raises(attempt) else None
    if free is not None:
        limit = cap.get("mem_mb")
        out["mem_mb"] = max(int(out["mem_mb"]), min(free, int(limit)) if limit is not None else free)
    if billing.max_time_min:
        out["runtime"] = min(int(out["runtime"]), int(billing.max_time_min))
    return out


def stage_floor(cfg: Mapping[str, Any], stage: str, base: Mapping[str, int]) -> dict[str, int]:
    """``stages.<stage>.floor`` (learned requests never go below it); the base without one."""
    floor = ((cfg.get("stages") or {}).get(stage) or {}).get("floor")
    return {key: int(value) for key, value in (floor or base).items()}


def make_plan(
    cfg: Mapping[str, Any], workdir: str | os.PathLike, billing: BillingModel
) -> ResourcePlan:
    """The plan from the config, the stages' usage summaries and a billing model."""
    first: dict[str, dict[str, int]] = {}
    samples: dict[str, int] = {}
    for stage in sorted(set(RULE_STAGE.values())):
        try:
            base, _, maximum = stage_settings(cfg, stage)
        except ConfigError:
            continue
        settings = LearnSettings.from_config(cfg, stage)
        history = read_samples(workdir, stage) if settings.enabled else []
        floor = stage_floor(cfg, stage, base)
        learned = learned_request(history, settings, base["threads"], floor, maximum)
        first[stage] = within_billing({**base, **(learned or {})}, 1, maximum, billing)
        samples[stage] = len(history) if learned else 0
    return ResourcePlan(first, samples, billing)


def resource_plan(
    cfg: Mapping[str, Any],
    workdir: str | os.PathLike,
    *,
    main: bool,
    executor: str | None,
    env: MutableMapping[str, str] | None = None,
) -> ResourcePlan:
    """The plan of this Snakemake process. The main process makes it (reading the billing
    from the cluster only under the SLURM executor) and exports it; a job's process takes
    its main process's plan from the environment."""
    env = os.environ if env is None else env
    inherited = env.get(environment.RESOURCE_PLAN)
    if not main and inherited:
        try:
            return ResourcePlan.from_json(inherited)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed resource plan", error=str(exc))
    billing = billing_model(cfg, on_slurm=main and executor == SLURM_EXECUTOR, env=env)
    plan = make_plan(cfg, workdir, billing)
    if main:
        env[environment.RESOURCE_PLAN] = plan.to_json()
        for stage, count in plan.samples.items():
            if count:
                log.info("first attempts learned from history", stage=stage, samples=count,
                         mem_mb=plan.first[stage]["mem_mb"], runtime=plan.first[stage]["runtime"])
    return plan
