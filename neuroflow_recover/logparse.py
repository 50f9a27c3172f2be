"""Parse Snakemake 9 main logs (local and SLURM runs) into typed records.

Contract (implementation pending): see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class JobAttempt:
    """One job block (`rule X:` / `localrule X:`) of the main log: one attempt of a job."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    resources: dict[str, str]
    output: list[str]
    log_files: list[str]
    started_at: datetime | None = None
    slurm_job_id: str | None = None
    slurm_log: str | None = None


@dataclass
class FailedJob:
    """A job that failed for good in one Snakemake invocation (all its attempts used)."""

    log_path: str  # the main log it came from
    run_id: str  # the main log's file name without .snakemake.log
    jobid: int
    rule: str
    wildcards: dict[str, str]
    attempts: int  # attempts made in this invocation (1 + "Trying to restart job N." lines)
    resources: dict[str, str]  # of the last attempt, as printed
    output: list[str]
    log_files: list[str]  # rule log files (without the SLURM log)
    message: str  # the error text of the main log (RuleException / CalledProcessError / SLURM line)
    exit_code: int | None = None
    slurm_job_ids: list[str] = field(default_factory=list)  # every attempt's, in order
    slurm_log: str | None = None  # last attempt's SLURM log
    slurm_state: str | None = None  # e.g. OUT_OF_MEMORY, TIMEOUT, FAILED
    shell: str | None = None
    failed_at: datetime | None = None
    attempt_details: list[JobAttempt] = field(default_factory=list)


@dataclass
class RunLog:
    """One Snakemake invocation's main log."""

    path: str
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    complete: bool  # the run reached its end ("Complete log(s):" or "steps (100%) done")
    failed: bool  # the run reported a failed job
    jobs_finished: int
    failed_jobs: list[FailedJob]
    warnings: list[str] = field(default_factory=list)
