"""Per-attempt records written by the step runner, where Snakemake does not delete them.

Contract (implementation pending): see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AttemptRecord:
    rule: str
    stage: str
    wildcards: dict[str, str]
    attempt: int
    started_at: str  # ISO 8601 UTC
    ended_at: str
    exit_code: int | None
    error_class: str | None  # None when the attempt succeeded
    retryable: bool | None
    resource: str | None
    pattern_id: str | None
    evidence: str | None
    resources: dict[str, int] = field(default_factory=dict)  # mem_mb, runtime, threads, disk_mb
    host: str = ""
    tail: list[str] = field(default_factory=list)  # last lines of the tool's output
    skipped: bool = False  # the tool was not started (earlier non-retryable cause, breaker)
    slurm_job_id: str | None = None
    log: str | None = None
