"""How the cluster bills a job, and the memory a job gets for free under that billing.

SLURM bills ``TRESBillingWeights`` of a partition: the SUM of weight x allocation over the
TRES, or with ``PriorityFlags=MAX_TRES`` the largest of them. Under MAX_TRES, memory up to
``threads x (CPU weight / Mem weight)`` costs nothing beyond the CPUs; without any weights
the billing is the CPU count and memory up to ``DefMemPerCPU`` per CPU (the partition's
fair share) is free; under SUM every megabyte is billed. Read from ``scontrol show
partition`` and ``scontrol show config`` on SLURM, or set in the config (``billing``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..logsetup import get_logger
from .accounting import parse_mem_mb, parse_timelimit_min

log = get_logger(__name__)

MODELS = ("max_tres", "sum", "cpus", "none")
RAISE_MODES = ("first_attempt", "retries", "never")
PARTITION_ENV = "NEUROFLOW_SLURM_PARTITION"  # the profile's partition (profiles/slurm)
TIMEOUT_S = 10
_PAIR = re.compile(r"(\w+)=(\S*)")
_WEIGHT = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)$")
_PER_MB = {"": 1.0, "K": 1024.0, "M": 1.0, "G": 1 / 1024, "T": 1 / 1024**2, "P": 1 / 1024**3}


@dataclass(frozen=True)
class BillingModel:
    """What raising a job's memory costs; ``mem_per_cpu_mb`` is the free share per CPU."""

    model: str  # one of MODELS
    mem_per_cpu_mb: int | None = None
    max_time_min: int | None = None  # the partition's MaxTime (None = unlimited / unknown)
    raise_memory: str = "retries"  # one of RAISE_MODES
    source: str = "config"

    def free_mem_mb(self, threads: int) -> int | None:
        """Memory a job of ``threads`` CPUs may have at no extra billing, or None."""
        if self.model not in ("max_tres", "cpus") or not self.mem_per_cpu_mb:
            return None
        return int(threads) * int(self.mem_per_cpu_mb)

    def raises(self, attempt: int) -> bool:
        """Whether memory is raised to the free share for this attempt."""
        return self.raise_memory == "first_attempt" or (self.raise_memory == "retries" and attempt > 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BillingModel":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


NO_BILLING = BillingModel("none", source="none")


def parse_pairs(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of ``scontrol show partition NAME`` (first record only)."""
    return dict(_PAIR.findall(text.split("\n\n")[0]))


def parse_config(text: str) -> dict[str, str]:
    """``Key = Value`` lines of ``scontrol show config``."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_weights(text: str | None) -> dict[str, float]:
    """``CPU=1.0,Mem=0.25G`` -> {"cpu": 1.0, "mem": weight per MB}."""
    weights = {}
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        found = _WEIGHT.match(value.strip())
        if not key.strip() or not found:
            continue
        weight = float(found.group(1))
        if key.strip().lower() == "mem":
            weight *= _PER_MB[found.group(2)]
        weights[key.strip().lower()] = weight
    return weights


def model_from_scontrol(
    partition: Mapping[str, str], config: Mapping[str, str], raise_memory: str = "retries"
) -> BillingModel:
    """The billing model of a partition (``parse_pairs``) under a config (``parse_config``)."""
    weights = parse_weights(partition.get("TRESBillingWeights") or config.get("TRESBillingWeights"))
    if "PriorityFlags" in config:
        max_tres = "MAX_TRES" in config["PriorityFlags"].upper()
    else:  # priority/basic does not show its flags: the partition's own billing tells
        max_tres = _billed_as_max(partition.get("TRES", ""), weights)
    max_time = parse_timelimit_min(partition.get("MaxTime"))
    def_mem = _def_mem_per_cpu(partition) or _def_mem_per_cpu(config)
    source = f"scontrol (partition {partition.get('PartitionName', '?')})"
    if not weights:
        return BillingModel("cpus", def_mem, max_time, raise_memory, source)
    if weights.get("cpu", 0) <= 0:
        return BillingModel("none", None, max_time, raise_memory, source)
    if not weights.get("mem"):
        return BillingModel("cpus", def_mem, max_time, raise_memory, source)
    if not max_tres:
        return BillingModel("sum", None, max_time, raise_memory, source)
    share = int(weights["cpu"] / weights["mem"])
    return BillingModel("max_tres", share, max_time, raise_memory, source)


def _billed_as_max(tres: str, weights: Mapping[str, float]) -> bool:
    """Whether the partition's total ``TRES=cpu=2,mem=20489M,...,billing=20`` is billed as
    the largest weighted TRES (MAX_TRES) rather than their sum."""
    values = dict(item.partition("=")[::2] for item in tres.split(",") if "=" in item)
    try:
        cpus, billing = float(values["cpu"]), float(values["billing"])
        mem = parse_mem_mb(values.get("mem", "0")) or 0
    except (KeyError, ValueError):
        return False
    largest = max(cpus * weights.get("cpu", 0), mem * weights.get("mem", 0))
    total = cpus * weights.get("cpu", 0) + mem * weights.get("mem", 0)
    return int(billing) == int(largest) != int(total)


def _def_mem_per_cpu(values: Mapping[str, str]) -> int | None:
    raw = (values.get("DefMemPerCPU") or "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def read_cluster(
    partition: str | None,
    raise_memory: str = "retries",
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> BillingModel | None:
    """The billing model from ``scontrol`` (``partition`` None: the default partition), or
    None when SLURM does not answer."""
    try:
        parts = run(["scontrol", "show", "partition", *([partition] if partition else [])],
                    capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
        conf = run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("cannot read the cluster's billing", error=str(exc))
        return None
    if parts.returncode != 0 or conf.returncode != 0:
        log.info("cannot read the cluster's billing", error=(parts.stderr + conf.stderr).strip()[:200])
        return None
    records = [parse_pairs(block) for block in parts.stdout.split("\n\n") if block.strip()]
    chosen = next((r for r in records if r.get("Default") == "YES"), records[0] if records else None)
    if partition is None and chosen is None:
        return None
    return model_from_scontrol(chosen or {}, parse_config(conf.stdout), raise_memory)


def billing_model(
    cfg: Mapping[str, Any] | None, on_slurm: bool, env: Mapping[str, str] | None = None
) -> BillingModel:
    """The billing model the config asks for: read from the cluster (``model: auto`` on
    SLURM), set in the config, or none (local runs bill nothing)."""
    section = dict((cfg or {}).get("billing") or {})
    model = section.get("model", "auto")
    raise_memory = section.get("raise_memory", "retries")
    if model == "auto":
        if not on_slurm:
            return NO_BILLING
        env = os.environ if env is None else env
        partition = section.get("partition") or env.get(PARTITION_ENV) or None
        found = read_cluster(partition, raise_memory)
        if found is None:
            return NO_BILLING
        per_cpu = section.get("mem_per_cpu_mb")
        if per_cpu:  # the config's share wins over the one derived from the weights
            found = replace(found, mem_per_cpu_mb=int(per_cpu), source=found.source + " + config")
        return found
    per_cpu = section.get("mem_per_cpu_mb")
    return BillingModel(model, int(per_cpu) if per_cpu else None, None, raise_memory, "config")
