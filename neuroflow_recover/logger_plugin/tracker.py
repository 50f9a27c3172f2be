"""Which jobs a running Snakemake has given up on, from its log events.

A failed attempt (a job error event) is final unless Snakemake restarts the job
("Trying to restart job N.", or the job's next job-info event) within `grace` seconds;
Snakemake prints the restart right after it handled the error.
"""

from __future__ import annotations

import re
import threading
import time

RESTART = re.compile(r"Trying to restart job (\d+)\.")


class JobTracker:
    """Thread-safe: `feed` from the logging thread, `take_final` from the worker."""

    def __init__(self, grace: float = 5.0, clock=time.monotonic):
        self.grace = grace
        self.clock = clock
        self._failed: dict[int, float] = {}  # jobid -> when its attempt failed
        self._lock = threading.Lock()

    def job_error(self, jobid: int) -> None:
        with self._lock:
            self._failed[jobid] = self.clock()

    def job_restarted(self, jobid: int) -> None:
        with self._lock:
            self._failed.pop(jobid, None)

    def message(self, text: str) -> None:
        found = RESTART.search(text)
        if found:
            self.job_restarted(int(found.group(1)))

    def take_final(self, now: float | None = None) -> list[int]:
        """The jobs whose failure is final by now (each returned once)."""
        now = self.clock() if now is None else now
        with self._lock:
            final = [jobid for jobid, at in self._failed.items() if now - at >= self.grace]
            for jobid in final:
                del self._failed[jobid]
        return sorted(final)

    def pending(self) -> int:
        with self._lock:
            return len(self._failed)
