"""What one attempt used: peak memory of the tool's process tree, elapsed and CPU time.

The peak is the largest SUM of resident memory over the tool and all its descendants seen
by a sampler (like SLURM's jobacct_gather/linux, which kills a step on the same sum), or
the largest single process the kernel reports for the reaped tree (``ru_maxrss``) when that
is larger (a peak between two samples). CPU time is the rusage of the reaped tree.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import psutil

SAMPLE_SECONDS = 1.0  # how often the process tree is summed while the tool runs
MB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """What an attempt used (None where it could not be measured)."""

    peak_mem_mb: int | None
    elapsed_s: float | None
    cpu_s: float | None
    source: str  # process-tree | sstat | sacct

    def cpu_efficiency(self, threads: int | None) -> float | None:
        """CPU time / (elapsed x threads): 1.0 = every thread busy all the time."""
        if not self.cpu_s or not self.elapsed_s or not threads:
            return None
        return self.cpu_s / (self.elapsed_s * threads)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (0 when it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class TreeMeter:
    """Measures one tool run: call ``sample()`` often (it samples at most every
    SAMPLE_SECONDS), ``finish()`` once the tool was reaped."""

    def __init__(self, interval: float = SAMPLE_SECONDS):
        self.interval = interval
        self.peak_bytes = 0
        self._next = 0.0
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._started = time.monotonic()

    def sample(self, pid: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.interval
        self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(pid))

    def finish(self, elapsed: float | None = None) -> Usage:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - self._children.ru_utime) + (after.ru_stime - self._children.ru_stime)
        largest = after.ru_maxrss * 1024  # kB on Linux; the largest reaped process ever
        peak = max(self.peak_bytes, largest if after.ru_maxrss != self._children.ru_maxrss else 0)
        elapsed = time.monotonic() - self._started if elapsed is None else elapsed
        return Usage(
            peak_mem_mb=round(peak / MB) if peak else None,
            elapsed_s=round(elapsed, 3),
            cpu_s=round(max(cpu, 0.0), 3),
            source="process-tree",
        )
