"""What a Snakemake main log says: its jobs' attempts, failed, recovered and finished jobs, and
the failure lines it could not attribute to a job."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .lines import small_int


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
    attempt: int = 1  # ordinal of this attempt within the invocation (1-based)
    input: list[str] = field(default_factory=list)
    threads: int | None = None  # only printed when > 1
    benchmark: str | None = None
    reason: str | None = None
    status: str = "running"  # running | failed | finished
    message: str = ""  # error text of this attempt (when it failed)
    exit_code: int | None = None
    slurm_state: str | None = None
    shell: str | None = None
    ended_at: datetime | None = None
    shown_logs: dict[str, str] = field(default_factory=dict)  # --show-failed-logs copies
    printed: str = ""  # lines the job printed into the main log (a rule without `log:`)
    submit_failed: bool = False  # sbatch refused it: the job never ran
    line: int = 0  # line of the log where this attempt's failure was reported


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
    message: (
        str  # the error text of the main log (RuleException / CalledProcessError / SLURM line)
    )
    exit_code: int | None = None
    slurm_job_ids: list[str] = field(default_factory=list)  # every attempt's, in order
    slurm_log: str | None = None  # last attempt's SLURM log
    slurm_state: str | None = None  # e.g. OUT_OF_MEMORY, TIMEOUT, FAILED
    shell: str | None = None
    failed_at: datetime | None = None
    attempt_details: list[JobAttempt] = field(default_factory=list)
    shown_logs: dict[str, str] = field(default_factory=dict)  # --show-failed-logs copies
    printed: str = ""  # lines it printed into the main log (JobAttempt.printed)
    submit_failed: bool = False  # the last attempt was refused by sbatch (never ran)
    line: int = 0  # line of the log where its last failure was reported

    @property
    def synthetic_jobid(self) -> bool:
        """The log printed no jobid for it (an error block without `jobid:`)."""
        return self.jobid < 0

    @property
    def attempt(self) -> int | None:
        """The workflow's `attempt` resource of the last attempt, when the rule has one."""
        value = self.resources.get("attempt")
        return small_int(value)


@dataclass
class RecoveredJob:
    """A job that failed at least once and then succeeded on a retry in the same invocation."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    attempts: int
    resources: dict[str, str]  # of the successful attempt
    failures: list[JobAttempt]  # the failed attempts, in order
    finished_at: datetime | None = None


@dataclass(slots=True)
class SucceededJob:
    """A job that finished successfully (`Finished jobid: N`), after its job block."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    finished_at: datetime | None = None
    output: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NotUnderstood:
    """A failure line of the log that became no failed job (and why)."""

    line: int
    text: str
    why: str


@dataclass
class RunLog:
    """One Snakemake invocation's main log."""

    path: str
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    # the run reached its end: "Complete log(s):", "steps (100%) done", "Nothing to be
    # done", "Unlocked working directory" or a workflow error (LockException, ...) as the
    # last thing in the log
    complete: bool
    failed: bool  # a job failed for good, or the run ended with its own error (LockException, ...)
    jobs_finished: int
    failed_jobs: list[FailedJob]
    warnings: list[str] = field(default_factory=list)
    recovered: list[RecoveredJob] = field(default_factory=list)
    unfinished: list[JobAttempt] = field(default_factory=list)  # running when the log ends
    errors: list[str] = field(default_factory=list)  # the run's own errors (LockException, ...)
    snakemake_version: str | None = None
    command: str | None = None  # the run's command line (the 9.x header's `Command:`)
    workflow_id: str | None = None  # the run's UUID (9.x header): its main log and console
    executor: str = "local"  # local | slurm (a SLURM submission line was seen)
    # every job that finished successfully (whose job block was seen), in log order
    succeeded: list[SucceededJob] = field(default_factory=list)
    # error blocks, restarts, SLURM and submission failures no job could be built from
    not_understood: list[NotUnderstood] = field(default_factory=list)
