"""What a stage's finished jobs used, kept small for the next plan: the usage summary.

The step runner appends one sample per job that succeeded (peak memory, the runtime the
job's work took, its threads) to ``.neuroflow/usage/<stage>.json`` under a file lock,
keeping the newest ``WINDOW``. A Snakemake process reads each summary once
(``step/resource_plan.py``); ``learned_request()`` turns the samples into a first attempt: a high
quantile plus a margin, within the stage's floor and cap (docs/architecture.md,
"First attempts").
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..logsetup import get_logger
from ..workflow.layout import job_key
from .attempts import AttemptRecord

log = get_logger(__name__)

USAGE_DIR = Path(".neuroflow") / "usage"
WINDOW = 1000  # newest successful jobs kept per stage
FIELDS = ["peak_mem_mb", "runtime_min", "threads", "job", "ended_at"]
LEARNED = ("mem_mb", "runtime")  # what history sets; threads and disk stay as configured


@dataclass(frozen=True)
class Sample:
    """One job that succeeded: what its work needed."""

    peak_mem_mb: int
    runtime_min: float  # elapsed of the successful attempt plus the attempts it resumed
    threads: int
    job: str = ""
    ended_at: str = ""


@dataclass(frozen=True)
class LearnSettings:
    """``stages.<stage>.learn`` of the config."""

    enabled: bool = True
    min_history: int = 20
    mem_quantile: float = 0.9
    mem_margin: float = 0.1
    runtime_quantile: float = 0.99
    runtime_margin: float = 0.5

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, stage: str) -> "LearnSettings":
        section = (((cfg or {}).get("stages") or {}).get(stage) or {}).get("learn") or {}
        known = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        return cls(**known)


def summary_path(workdir: str | os.PathLike, stage: str) -> Path:
    return Path(workdir) / USAGE_DIR / f"{stage}.json"


def read_samples(workdir: str | os.PathLike, stage: str) -> list[Sample]:
    """The stage's samples, oldest first ([] when there is no summary or it is unreadable)."""
    path = summary_path(workdir, stage)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["samples"]
        return [Sample(*row) for row in rows]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("usage summary unreadable; learning from nothing", path=str(path), error=str(exc))
        return []


@contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_sample(workdir: str | os.PathLike, stage: str, sample: Sample, window: int = WINDOW) -> None:
    """Append ``sample`` to the stage's summary (atomic rewrite under an exclusive lock)."""
    path = summary_path(workdir, stage)
    with _locked(path.parent):
        rows = [list(vars(s).values()) for s in read_samples(workdir, stage)]
        rows = (rows + [list(vars(sample).values())])[-window:]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fields": FIELDS, "samples": rows}) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def sample_of(record: AttemptRecord, records: Sequence[AttemptRecord]) -> Sample | None:
    """What a successful attempt says its job needed, or None without measurements.

    ``records`` are the job's records oldest first. When the attempt resumed from the work
    directory of the tool run before it, that run's elapsed time counts too (its finished
    steps were skipped), and so on back; the peak is the largest of those runs.
    """
    if record.peak_mem_mb is None or record.elapsed_s is None:
        return None
    ran = sorted(
        (r for r in records
         if not r.skipped and r.elapsed_s is not None and r.started_at < record.started_at),
        key=lambda r: r.started_at,
    )  # fmt: skip
    elapsed, peak, current = record.elapsed_s, record.peak_mem_mb, record
    while current.resumed and ran:
        current = ran.pop()
        elapsed += current.elapsed_s or 0.0
        peak = max(peak, current.peak_mem_mb or 0)
    threads = int(record.resources.get("threads") or 1)
    job = job_key(record.rule, record.wildcards)
    return Sample(int(peak), round(elapsed / 60, 3), threads, job, record.ended_at)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * min(max(q, 0.0), 1.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def learned_request(
    samples: Sequence[Sample],
    settings: LearnSettings,
    threads: int,
    floor: Mapping[str, int],
    cap: Mapping[str, int],
) -> dict[str, int] | None:
    """``mem_mb`` and ``runtime`` for a first attempt from the samples taken with the same
    ``threads``: quantile x (1 + margin), within [floor, cap]; None while disabled or
    fewer than ``min_history`` samples exist."""
    usable = [s for s in samples if s.threads == threads]
    if not settings.enabled or len(usable) < max(1, settings.min_history):
        return None
    mem = quantile([s.peak_mem_mb for s in usable], settings.mem_quantile) * (1 + settings.mem_margin)
    runtime = quantile([s.runtime_min for s in usable], settings.runtime_quantile) * (1 + settings.runtime_margin)
    out = {}
    for key, value in (("mem_mb", mem), ("runtime", runtime)):
        value = math.ceil(value)
        if floor.get(key) is not None:
            value = max(value, int(floor[key]))
        if cap.get(key) is not None:
            value = min(value, int(cap[key]))
        out[key] = value
    return out
