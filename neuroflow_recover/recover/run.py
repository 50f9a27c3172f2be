"""`run`: invoke Snakemake, ingest its log, re-run transient failures after a backoff.

Snakemake runs with `NEUROFLOW_DEFER_TRANSIENT=1`, so the step runner does not start the
tool again after a transient failure; `run` re-runs such jobs on their targets after
`policy.get_delay(n)` seconds (n = real attempts across rounds) until the policy's
max_attempts, and dead-letters everything else at once (docs/architecture.md, "Dead-letter
queue and recovery"). These functions own their short transactions, never while Snakemake
runs: pass a Session that is not inside a transaction.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from .. import environment
from ..classify.policy import RetryPolicy, get_retry_policy, policies_from_config
from ..errors import DatabaseUnavailable
from ..logs.locations import display_path
from ..logsetup import get_logger
from ..queue.database import describe_failure
from ..queue.entries import JobFailure, dead_letter, real_attempts
from ..queue.ingest import IngestContext, LogIngest, ingest_one
from ..workflow.invocation import Invocation, build_command, show_command
from ..workflow.sheet import load_sessions
from .lock import check_lock
from .outcomes import record_pending
from .plan import Plan, effective_triggers, make_plan, record_state, snakefile_dir
from .process import require_log, run_snakemake

log = get_logger(__name__)

COUNTDOWN_EVERY_S = 5.0
# failures reach the queue while Snakemake runs (neuroflow_recover/logger_plugin)
LOGGER_PLUGIN = "neuroflow"
# Snakemake's closing line of every failed run: not worth repeating in the summary
GENERIC_FAILURE = "At least one job did not complete successfully"

Echo = Callable[[str], None]


def delay_scale_from_env(default: float = 1.0) -> float:
    return environment.non_negative(environment.DELAY_SCALE, default)


@dataclass
class Round:
    number: int
    command: list[str]
    returncode: int
    log_path: str | None
    failed: list[str] = field(default_factory=list)  # job keys that failed in this round
    retried: list[str] = field(default_factory=list)  # job keys held for another round
    entry_ids: list[int] = field(default_factory=list)  # dead-lettered in this round
    errors: list[str] = field(default_factory=list)  # Snakemake's own errors in its log
    resolved: list[int] = field(default_factory=list)  # open entries whose job succeeded


@dataclass
class RunSummary:
    rounds: list[Round] = field(default_factory=list)
    plan: Plan | None = None  # None: the user's targets, or not a neuroflow study

    @property
    def returncode(self) -> int:
        return self.rounds[-1].returncode if self.rounds else 0

    @property
    def entry_ids(self) -> list[int]:
        ids: list[int] = []
        for item in self.rounds:
            ids.extend(i for i in item.entry_ids if i not in ids)
        return ids

    @property
    def exit_status(self) -> int:
        """0 when everything succeeded, 1 when anything was dead-lettered or Snakemake failed."""
        return 1 if self.entry_ids or self.returncode != 0 else 0

    def to_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict() if self.plan else None,
            "snakemake_exit_code": self.returncode,
            "dead_lettered": self.entry_ids,
            "rounds": [
                {
                    "round": r.number,
                    "command": show_command(r.command),
                    "snakemake_exit_code": r.returncode,
                    "log": r.log_path,
                    "failed_jobs": r.failed,
                    "retried_jobs": r.retried,
                    "dead_lettered": r.entry_ids,
                    "snakemake_errors": r.errors,
                    "resolved": r.resolved,
                }
                for r in self.rounds
            ],
        }


def run_workflow(
    session: Session,
    workdir: Path,
    cfg: dict,
    invocation: Invocation,
    targets: list[str] | None = None,
    *,
    delay_scale: float | None = None,
    unlock: bool = False,
    force_unlock: bool = False,
    echo: Echo | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stall_seconds: float | None = None,
    full: bool = False,
) -> RunSummary:
    """Run the workflow (only the subjects with work when that is provably what Snakemake
    would run, see `plan`), retry transient failures with backoff, dead-letter the rest."""
    workdir = Path(workdir)
    scale = delay_scale_from_env() if delay_scale is None else delay_scale
    record_pending(session, workdir, cfg)  # outcomes of earlier retries not yet recorded
    check_lock(workdir, invocation, unlock=unlock, force=force_unlock)
    sessions, plan = _plan(workdir, cfg, invocation, targets, full)
    rounds = _Rounds(
        session,
        IngestContext.build(workdir, cfg, invocation.to_dict()),
        invocation,
        policies_from_config(cfg),
        echo,
        stall_seconds,
        summary=RunSummary(plan=plan),
    )
    if plan is not None and not plan.full:
        if not plan.subjects:
            return rounds.summary  # every session is done: nothing for Snakemake to plan
        rounds.extra_env[environment.PLAN_SHEET] = str(plan.sheet)
    summary = _rounds(rounds, list(targets or []), scale, echo, sleep)
    if plan is not None:
        record_state(workdir, cfg, sessions, snakefile_dir(workdir, invocation.snakemake_args))
    return summary


def _plan(workdir: Path, cfg: dict, invocation: Invocation, targets, full: bool):
    """(the study's sessions, the plan), or (None, None) when the user named targets or the
    workflow has no sessions sheet (another workflow: Snakemake plans as always)."""
    sheet = cfg.get("sessions") if isinstance(cfg, dict) else None
    path = Path(workdir) / sheet if sheet else None
    if targets or path is None or not path.is_file():
        return None, None
    sessions = load_sessions(path)
    if full:
        return sessions, Plan(True, "--full")
    options = invocation.snakemake_args
    triggers = effective_triggers(workdir, options, invocation.profile)
    return sessions, make_plan(
        workdir, cfg, sessions, snakefile_dir(workdir, options), options, triggers
    )


def _rounds(rounds: _Rounds, round_targets: list[str], scale, echo, sleep) -> RunSummary:
    held: list[JobFailure] = []  # failures waiting for the next round
    while True:
        try:
            if held:
                wait = _wait_seconds(held, rounds.policies, scale)
                _countdown(wait, held, len(rounds.summary.rounds) + 1, echo, sleep)
            result = rounds.run(round_targets, held)
        except BaseException:
            # interrupted, or Snakemake did not run: what was to be retried is queued now
            if held:
                _dead_letter_held(rounds.session, held)
            raise
        held = list(result.held) if result is not None else []
        if not held:
            return rounds.summary
        round_targets = list(dict.fromkeys(t for failure in held for t in failure.targets))


@dataclass
class _Rounds:
    """The rounds of one `run`: each a Snakemake run whose log is ingested at once."""

    session: Session
    context: IngestContext
    invocation: Invocation
    policies: dict[str, RetryPolicy]
    echo: Echo | None
    stall_seconds: float | None
    summary: RunSummary = field(default_factory=RunSummary)
    extra_env: dict[str, str] = field(default_factory=dict)

    def run(self, targets: list[str], held: list[JobFailure]) -> LogIngest | None:
        """Snakemake on `targets`; its log ingested, failures that the policy retries held
        (not queued). None when Snakemake wrote no log (it had nothing to do)."""
        command = build_command(self.invocation, targets, logger=LOGGER_PLUGIN)
        workdir = self.context.workdir
        # the step runner defers Snakemake's immediate retries of transient failures
        run = run_snakemake(
            command,
            workdir,
            echo=self.echo,
            extra_env={environment.DEFER_TRANSIENT: "1", **self.extra_env},
            stall_seconds=self.stall_seconds,
        )
        shown = display_path(run.log_path, workdir) if run.log_path else None
        current = Round(len(self.summary.rounds) + 1, command, run.returncode, shown)
        self.summary.rounds.append(current)
        if run.log_path is None:
            require_log(run)  # raises unless Snakemake had nothing to do
            return None
        carried = {f.job_key: list(f.events) for f in held}
        try:
            result = ingest_one(
                self.session,
                self.context,
                run.log_path,
                hold=lambda f: _should_retry(f, self.policies),
                carried=carried,
            )
        except (sa_exc.DBAPIError, sqlite3.Error) as exc:
            reason = describe_failure(exc, self.session.get_bind())
            if reason is None:
                raise
            raise DatabaseUnavailable(
                f"{reason}. Snakemake ran (exit {run.returncode}, log {shown}) but its failures "
                "are not recorded: its log is kept, run `neuroflow-recover ingest` once the "
                "database works again"
            ) from exc
        current.failed = [f.job_key for f in result.failures]
        current.entry_ids = list(result.entry_ids)
        current.retried = [f.job_key for f in result.held]
        current.errors = [e for e in result.run_errors if GENERIC_FAILURE not in e]
        current.resolved = list(result.resolved_ids)
        return result


def _wait_seconds(held: list[JobFailure], policies: dict, scale: float) -> float:
    delay = max(
        _policy(policies, f.pipeline_name).get_delay(max(1, real_attempts(f.events)))
        for f in held
    )
    return max(0.0, float(delay) * scale)


def _dead_letter_held(session: Session, held: list[JobFailure]) -> None:
    try:
        with session.begin():
            for failure in held:
                dead_letter(session, failure)
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        # the database fails (the error being raised says how): name what is not queued
        log.error(
            "cannot queue the failures that were to be retried; re-run them with "
            "`neuroflow-recover run`",
            jobs=[failure.job_key for failure in held],
            error=describe_failure(exc, session.get_bind()) or str(exc),
        )


def _should_retry(failure: JobFailure, policies: dict) -> bool:
    if failure.error_type != "TransientError":
        return False
    policy = _policy(policies, failure.pipeline_name)
    return real_attempts(failure.events) < policy.max_attempts


def _policy(policies: dict, pipeline: str) -> RetryPolicy:
    return get_retry_policy(pipeline, policies)


def _countdown(
    wait_s: float, held: list[JobFailure], next_round: int, echo: Echo | None, sleep
) -> None:
    jobs = ", ".join(f.job_key for f in held)
    log.warning(
        "transient failure, retrying after backoff",
        jobs=[f.job_key for f in held],
        delay_seconds=round(wait_s, 2),
        next_round=next_round,
    )
    remaining = wait_s
    while True:
        _say(
            echo,
            f"neuroflow: transient failure of {jobs}; retry round {next_round} "
            f"in {remaining:.0f} s\n",
        )
        if remaining <= 0:
            return
        step = min(COUNTDOWN_EVERY_S, remaining)
        sleep(step)
        remaining -= step


def _say(echo: Echo | None, text: str) -> None:
    if echo is not None:
        echo(text)
    else:
        sys.stderr.write(text)
        sys.stderr.flush()
