"""SLURM's accounting of jobs: ``sacct`` after they ended, ``sstat`` of a running step.

``sacct`` gives the job row (state, ReqMem, Timelimit, Elapsed, TotalCPU, AllocCPUS,
AllocTRES with its ``billing``) and one row per step (``123.batch``, ``123.0``) carrying
MaxRSS; a job's peak is the largest MaxRSS of its steps. Every query is bounded in time
and answers None/{} when SLURM cannot (no accounting, no such command).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..logsetup import get_logger

log = get_logger(__name__)

SACCT_FIELDS = (
    "JobID", "State", "ReqMem", "Timelimit", "Elapsed", "TotalCPU", "MaxRSS", "AllocCPUS",
    "AllocTRES",
)  # fmt: skip
BATCH = 200  # job ids per sacct call
TIMEOUT_S = 30
_MEM = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)([nc]?)$")
_UNITS = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class JobAccounting:
    """One SLURM job as ``sacct`` saw it (sizes in MB, times in seconds / minutes)."""

    job_id: str
    state: str
    req_mem_mb: int | None
    timelimit_min: int | None
    elapsed_s: float | None
    cpu_s: float | None
    max_rss_mb: int | None
    alloc_cpus: int | None
    billing: float | None


def parse_mem_mb(text: str | None, cpus: int | None = None) -> int | None:
    """``810624K`` / ``1200M`` / ``1.5G`` (a trailing ``c`` = per CPU, ``n`` = per node)."""
    found = _MEM.match((text or "").strip())
    if not found:
        return None
    value = float(found.group(1)) * _UNITS[found.group(2) or ("M" if found.group(3) else "")]
    if found.group(3) == "c" and cpus:
        value *= cpus
    return round(value)


def parse_duration_s(text: str | None) -> float | None:
    """``[D-][HH:]MM:SS[.mmm]`` as seconds; None for UNLIMITED, INVALID or empty."""
    text = (text or "").strip()
    if not text or not text[0].isdigit():
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return days * 86400 + seconds


def parse_timelimit_min(text: str | None) -> int | None:
    seconds = parse_duration_s(text)
    return None if seconds is None else round(seconds / 60)


def _billing(tres: str) -> float | None:
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "billing":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def parse_sacct(text: str) -> dict[str, JobAccounting]:
    """Job id -> its accounting, from ``sacct -n -P -o <SACCT_FIELDS>`` output."""
    rows = [line.split("|") for line in text.splitlines() if line.count("|") >= len(SACCT_FIELDS) - 1]
    peaks: dict[str, int] = {}
    for row in rows:
        job, _, step = row[0].partition(".")
        rss = parse_mem_mb(row[6])
        if step and rss is not None:
            peaks[job] = max(peaks.get(job, 0), rss)
    jobs = {}
    for row in rows:
        if "." in row[0]:
            continue
        cpus = int(row[7]) if row[7].isdigit() else None
        jobs[row[0]] = JobAccounting(
            job_id=row[0],
            state=row[1].split()[0] if row[1] else "",
            req_mem_mb=parse_mem_mb(row[2], cpus),
            timelimit_min=parse_timelimit_min(row[3]),
            elapsed_s=parse_duration_s(row[4]),
            cpu_s=parse_duration_s(row[5]),
            max_rss_mb=peaks.get(row[0]),
            alloc_cpus=cpus,
            billing=_billing(row[8]),
        )
    return jobs


def sacct_jobs(job_ids: Iterable[str], run: Runner = subprocess.run) -> dict[str, JobAccounting]:
    """The accounting of these SLURM jobs ({} without sacct or accounting)."""
    ids = sorted({str(i) for i in job_ids if i and str(i).isdigit()}, key=int)
    found: dict[str, JobAccounting] = {}
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        command = ["sacct", "-n", "-P", "-j", ",".join(chunk), "-o", ",".join(SACCT_FIELDS)]
        try:
            done = run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("no SLURM accounting", error=str(exc))
            return found
        if done.returncode != 0:
            log.info("no SLURM accounting", error=(done.stderr or "").strip()[:200])
            return found
        found.update(parse_sacct(done.stdout))
    return found


def sstat_max_rss_mb(job_id: str, step_id: str, run: Runner = subprocess.run) -> int | None:
    """MaxRSS of a running step (what SLURM's memory enforcement sees), or None."""
    command = ["sstat", "-n", "-P", "-j", f"{job_id}.{step_id}", "-o", "MaxRSS"]
    try:
        done = run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    values = [parse_mem_mb(line) for line in done.stdout.splitlines()] if done.returncode == 0 else []
    values = [v for v in values if v is not None]
    return max(values) if values else None
