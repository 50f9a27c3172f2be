"""`run`, `retry` and `retry-all`: invoke Snakemake, ingest its log, back off, resolve.

* `run_workflow`: runs Snakemake, ingests the log of THAT run (from its
  `Complete log(s):` line). Failures classed TransientError whose policy allows another
  attempt are re-run (Snakemake on their targets) after `policy.get_delay(n)` seconds with
  jitter; everything else is dead-lettered at once. Snakemake runs with
  `NEUROFLOW_DEFER_TRANSIENT=1`, so the step runner does not start the tool again after a
  transient failure (Snakemake's immediate retries end at once, `deferred` records):
  n counts REAL attempts (the tool ran: records not skipped, or main-log attempts when a
  rule has no records) across rounds, and the job is dead-lettered when n reaches the
  policy's max_attempts. Delays are multiplied by `NEUROFLOW_DELAY_SCALE` (e.g. 0.01 in
  tests) or `delay_scale`.
* `retry_entry` / `retry_all`: re-run an entry's targets with the invocation (config
  files, profile, Snakemake options) that produced it, ingest that run, and resolve the
  entry ONLY when its job now succeeded; a failed retry keeps it open with the new attempts.

A SLURM run that makes no progress (no output, no job of the run in squeue) for the stall
timeout is stopped by the watchdog (`watchdog`, `stall_seconds`) and ends with `RunStalled`.

These functions own their transactions (short ones, never while Snakemake runs): pass a
Session that is not inside a transaction.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from .dlq import (
    AttemptEvent,
    JobFailure,
    add_event,
    get_entry,
    list_entries,
    mark_resolved,
    real_attempts,
)
from .errors import NeuroflowError, SnakemakeFailed
from .ingest import IngestContext, LogIngest, ingest_log
from .logsetup import get_logger
from .snakemake_cmd import (
    Invocation,
    SnakemakeRun,
    build_command,
    check_lock,
    run_snakemake,
    show_command,
)
from .stepexec import DEFER_TRANSIENT_ENV
from .targets import job_outputs, targets_for

log = get_logger(__name__)

DELAY_SCALE_ENV = "NEUROFLOW_DELAY_SCALE"
COUNTDOWN_EVERY_S = 5.0
# Snakemake's closing line of every failed run: not worth repeating in the summary
GENERIC_FAILURE = "At least one job did not complete successfully"

Echo = Callable[[str], None]


def delay_scale_from_env(default: float = 1.0) -> float:
    raw = os.environ.get(DELAY_SCALE_ENV)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise NeuroflowError(f"{DELAY_SCALE_ENV}={raw!r} is not a number") from exc
    if value < 0:
        raise NeuroflowError(f"{DELAY_SCALE_ENV} must be >= 0, not {raw}")
    return value


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
    echo: Echo | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stall_seconds: float | None = None,
) -> RunSummary:
    """Run the workflow, retry transient failures with backoff, dead-letter the rest."""
    from .retry import policies_from_config

    workdir = Path(workdir)
    scale = delay_scale_from_env() if delay_scale is None else delay_scale
    policies = policies_from_config(cfg)
    check_lock(workdir, invocation, unlock=unlock)
    context = IngestContext.build(workdir, cfg, invocation.to_dict())
    summary = RunSummary()
    held: list[JobFailure] = []  # failures waiting for the next round
    round_targets = list(targets or [])
    number = 1
    while True:
        command = build_command(invocation, round_targets)
        try:
            if held:
                _countdown(_wait_seconds(held, policies, scale), held, number, echo, sleep)
            # the step runner defers Snakemake's immediate retries of transient failures
            run = run_snakemake(
                command,
                workdir,
                echo=echo,
                extra_env={DEFER_TRANSIENT_ENV: "1"},
                stall_seconds=stall_seconds,
            )
            current = Round(number, command, run.returncode, _shown(run.log_path, workdir))
            summary.rounds.append(current)
            if run.log_path is None:
                _no_log(run)  # raises unless Snakemake had nothing to do
                break
            carried = {f.job_key: list(f.events) for f in held}
            result = _ingest_round(
                session, context, run.log_path, lambda f: _should_retry(f, policies), carried
            )
        except BaseException:
            # interrupted, or Snakemake did not run: what was to be retried is queued now
            if held:
                _dead_letter_held(session, held)
            raise
        current.failed = [f.job_key for f in result.failures]
        current.entry_ids = list(result.entry_ids)
        current.retried = [f.job_key for f in result.held]
        current.errors = [e for e in result.run_errors if GENERIC_FAILURE not in e]
        current.resolved = list(result.resolved_ids)
        held = list(result.held)
        if not held:
            break
        round_targets = []
        for failure in held:
            round_targets += [t for t in failure.targets if t not in round_targets]
        number += 1
    return summary


def _wait_seconds(held: list[JobFailure], policies: dict, scale: float) -> float:
    delay = max(
        _policy(policies, f.pipeline_name).get_delay(max(1, real_attempts(f.events)))
        for f in held
    )
    return max(0.0, float(delay) * scale)


def _ingest_round(session, context, log_path, hold, carried) -> LogIngest:
    with session.begin():
        return ingest_log(session, context, log_path, hold=hold, carried=carried)


def _dead_letter_held(session: Session, held: list[JobFailure]) -> None:
    from .dlq import dead_letter

    with session.begin():
        for failure in held:
            dead_letter(session, failure)


def _should_retry(failure: JobFailure, policies: dict) -> bool:
    if failure.error_type != "TransientError":
        return False
    policy = _policy(policies, failure.pipeline_name)
    return real_attempts(failure.events) < policy.max_attempts


def _policy(policies: dict, pipeline: str):
    from .retry import get_retry_policy

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


def _no_log(run: SnakemakeRun) -> None:
    if run.returncode == 0:
        return  # "Nothing to be done": Snakemake prints no log line
    tail = "\n".join(run.output_tail[-15:])
    raise SnakemakeFailed(
        f"Snakemake exited with {run.returncode} before running any job "
        f"(no `Complete log(s):` line); its last output:\n{tail}"
    )


def _shown(path: Path | None, workdir: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(Path(workdir).absolute()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- retry


@dataclass
class RetryOutcome:
    entry_ids: list[int]
    command: list[str]
    dry_run: bool
    returncode: int | None = None
    log_path: str | None = None
    resolved: list[int] = field(default_factory=list)
    still_open: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # id -> why (non-retryable)
    new_entries: list[int] = field(default_factory=list)  # other jobs that failed in the run
    targets: list[str] = field(default_factory=list)  # what Snakemake was (or would be) asked for

    def to_dict(self) -> dict:
        return {
            "entries": self.entry_ids,
            "command": show_command(self.command) if self.command else None,
            "targets": self.targets,
            "dry_run": self.dry_run,
            "snakemake_exit_code": self.returncode,
            "log": self.log_path,
            "resolved": self.resolved,
            "still_open": self.still_open,
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "new_entries": self.new_entries,
        }


@dataclass
class _Plan:
    entry_id: int
    job_key: str
    outputs: list[str]
    targets: list[str]
    invocation: Invocation


def retry_entry(
    session: Session,
    entry_id: int,
    workdir: Path,
    cfg: dict,
    *,
    force: bool = False,
    dry_run: bool = False,
    unlock: bool = False,
    echo: Echo | None = None,
    stall_seconds: float | None = None,
) -> RetryOutcome:
    """Re-run one entry's targets; resolve it only if its job now succeeded."""
    with session.begin():
        entry = get_entry(session, entry_id)
        if entry.resolved:
            raise NeuroflowError(
                f"dead-letter entry {entry_id} is already resolved (by {entry.resolved_by})"
            )
        refusal = _refusal(entry, workdir, cfg, force)
        if refusal is not None:
            raise NeuroflowError(refusal)
        plan = _plan(entry, cfg, workdir)
    outcomes = _execute(
        [plan],
        session,
        workdir,
        cfg,
        dry_run=dry_run,
        unlock=unlock,
        echo=echo,
        stall_seconds=stall_seconds,
    )
    return outcomes[0]


def retry_all(
    session: Session,
    pipeline: str,
    workdir: Path,
    cfg: dict,
    *,
    force: bool = False,
    dry_run: bool = False,
    unlock: bool = False,
    echo: Echo | None = None,
    stall_seconds: float | None = None,
) -> list[RetryOutcome]:
    """Retry every unresolved entry of a pipeline: one Snakemake run per invocation."""
    skipped: dict[int, str] = {}
    plans: list[_Plan] = []
    with session.begin():
        for entry in reversed(list_entries(session, pipeline, limit=None)):
            refusal = _refusal(entry, workdir, cfg, force)
            if refusal is not None:
                skipped[entry.id] = refusal.removeprefix(f"entry {entry.id} ")
                continue
            plans.append(_plan(entry, cfg, workdir))
    groups: dict[str, list[_Plan]] = {}
    for plan in plans:
        groups.setdefault(json.dumps(plan.invocation.to_dict(), sort_keys=True), []).append(plan)
    outcomes: list[RetryOutcome] = []
    for group in groups.values():
        outcomes += _execute(
            group,
            session,
            workdir,
            cfg,
            dry_run=dry_run,
            unlock=unlock,
            echo=echo,
            stall_seconds=stall_seconds,
        )
        unlock = False
    if skipped:
        outcomes.append(RetryOutcome(sorted(skipped), [], dry_run, skipped=skipped))
    return outcomes


def _refusal(entry, workdir: Path, cfg: dict, force: bool) -> str | None:
    """Why a non-retryable entry may not be retried now, or None (see `changes`).

    A non-retryable failure (bad input, bad configuration) would fail the same way again;
    it is retried when one of its inputs or the configuration changed since it failed
    (someone fixed the cause), or with --force.
    """
    if entry.retryable or force:
        return None
    from .changes import changes_since

    found = changes_since(entry, workdir, cfg)
    if found:
        change = found[0]
        log.info(
            "non-retryable entry: a dependency changed since its last failure, retrying",
            entry_id=entry.id,
            changed=f"{change.kind} {change.path}",
            changed_at=change.changed_at.isoformat(timespec="seconds"),
        )
        return None
    since = _shown_time(entry.failed_at)
    return (
        f"entry {entry.id} failed with {entry.error_type} (not retryable) and neither its "
        f"inputs nor the configuration changed since {since}; fix the cause and retry, "
        "or use --force"
    )


def _shown_time(value) -> str:
    from .changes import as_utc

    moment = as_utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "its failure"


def _plan(entry, cfg: dict, workdir: Path) -> _Plan:
    targets = list(entry.targets or [])
    if not targets:
        from .ingest import _load_sessions

        targets = targets_for(entry, cfg, _load_sessions(workdir, cfg))
    return _Plan(
        entry_id=entry.id,
        job_key=entry.job_key,
        outputs=job_outputs(entry),
        targets=targets,
        invocation=Invocation.from_dict(entry.invocation),
    )


def _execute(
    plans: list[_Plan],
    session: Session,
    workdir: Path,
    cfg: dict,
    *,
    dry_run: bool,
    unlock: bool,
    echo: Echo | None,
    stall_seconds: float | None = None,
) -> list[RetryOutcome]:
    """One Snakemake run for plans sharing an invocation; resolve the jobs that succeeded."""
    workdir = Path(workdir)
    ids = [plan.entry_id for plan in plans]
    targets: list[str] = []
    for plan in plans:
        targets += [t for t in plan.targets if t not in targets]
    invocation = plans[0].invocation
    command = build_command(invocation, targets)
    outcome = RetryOutcome(ids, command, dry_run, targets=list(targets))
    if dry_run:
        return [outcome]
    check_lock(workdir, invocation, unlock=unlock)
    run = run_snakemake(command, workdir, echo=echo, stall_seconds=stall_seconds)
    outcome.returncode = run.returncode
    outcome.log_path = _shown(run.log_path, workdir)
    context = IngestContext.build(workdir, cfg, invocation.to_dict())
    with session.begin():
        failed_keys: set[str] = set()
        result = None
        if run.log_path is not None:
            # the retried entries are resolved below (by "retry"), only if outputs exist
            keys = [plan.job_key for plan in plans]
            result = ingest_log(session, context, run.log_path, leave_open=keys)
            failed_keys = {failure.job_key for failure in result.failures}
        run_name = Path(run.log_path).name.removesuffix(".snakemake.log") if run.log_path else None
        for plan in plans:
            entry = get_entry(session, plan.entry_id)
            outputs_exist = all((workdir / path).exists() for path in plan.outputs)
            succeeded = (
                plan.job_key not in failed_keys
                and outputs_exist
                and (run.log_path is not None or run.returncode == 0)
            )
            if succeeded:
                mark_resolved(
                    entry,
                    "retry",
                    f"retried in Snakemake run {run_name or '(nothing to be done)'}: "
                    "the job succeeded",
                )
                outcome.resolved.append(plan.entry_id)
                log.info("resolved by retry", entry_id=plan.entry_id, run=run_name)
                continue
            outcome.still_open.append(plan.entry_id)
            if plan.job_key not in failed_keys:
                # the job did not run or did not fail visibly: still record the attempt
                add_event(
                    session,
                    entry,
                    AttemptEvent(
                        event_key=f"retry:{run_name or run.returncode}:{plan.entry_id}:"
                        f"{entry.attempts + 1}",
                        source="retry",
                        run_id=run_name,
                        exit_code=run.returncode,
                        error_type=entry.error_type,
                        evidence=_retry_evidence(run, outputs_exist),
                    ),
                )
            log.warning("retry did not succeed; entry stays open", entry_id=plan.entry_id)
        if result is not None:
            outcome.new_entries = [i for i in result.entry_ids if i not in ids]
    if run.log_path is None and run.returncode != 0:
        _no_log(run)
    return [outcome]


def _retry_evidence(run: SnakemakeRun, outputs_exist: bool) -> str:
    if not outputs_exist:
        return (
            f"retry: Snakemake exited {run.returncode} and the job's outputs are missing "
            "(it did not run, e.g. an upstream job failed)"
        )
    return f"retry: Snakemake exited {run.returncode}"
