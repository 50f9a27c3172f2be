"""`retry` and `retry-all`: re-run entries' targets, resolve an entry only if its job succeeded.

The targets run with the invocation (config files, profile, Snakemake options) that produced
the entry; its run is ingested; a failed retry keeps the entry open with the new attempts.
A non-retryable entry is refused unless something it depends on changed (`changes`) or
`force`. One Snakemake run per invocation; short transactions, never while Snakemake runs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ..errors import DatabaseUnavailable, NeuroflowError
from ..logs.locations import display_path
from ..logsetup import get_logger
from ..queue.changes import changes_since
from ..queue.database import describe_failure
from ..queue.entries import get_entry, list_entries
from ..times import as_utc
from ..workflow.invocation import Invocation, build_command, from_command_line, show_command
from ..workflow.sheet import study_sessions
from ..workflow.targets import job_outputs, targets_for
from .lock import check_lock
from .outcomes import PendingOutcome, RetryPlan, record_outcome, record_pending, save_pending
from .process import SnakemakeRun, require_log, run_snakemake

log = get_logger(__name__)

Echo = Callable[[str], None]


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


@dataclass(frozen=True)
class RetryOptions:
    """How `retry` and `retry-all` run (the same options for both)."""

    force: bool = False  # retry non-retryable entries even if nothing changed
    dry_run: bool = False  # print the command and targets only
    unlock: bool = False  # remove a stale Snakemake lock first
    force_unlock: bool = False  # remove it even when its holder may live on another host
    echo: Echo | None = None  # where Snakemake's output goes (default: stderr)
    stall_seconds: float | None = None  # the SLURM watchdog's stall timeout


def retry_entry(
    session: Session,
    entry_id: int,
    workdir: Path,
    cfg: dict,
    options: RetryOptions = RetryOptions(),
) -> RetryOutcome:
    """Re-run one entry's targets; resolve it only if its job now succeeded."""
    record_pending(session, workdir, cfg)
    with session.begin():
        entry = get_entry(session, entry_id)
        if entry.resolved:
            raise NeuroflowError(
                f"dead-letter entry {entry_id} is already resolved (by {entry.resolved_by})"
            )
        refusal = _refusal(entry, workdir, cfg, options.force)
        if refusal is not None:
            raise NeuroflowError(refusal)
        plan = _plan(entry, cfg, workdir)
    return _execute([plan], session, workdir, cfg, options)[0]


def retry_all(
    session: Session,
    pipeline: str,
    workdir: Path,
    cfg: dict,
    options: RetryOptions = RetryOptions(),
) -> list[RetryOutcome]:
    """Retry every unresolved entry of a pipeline: one Snakemake run per invocation."""
    skipped: dict[int, str] = {}
    plans: list[RetryPlan] = []
    record_pending(session, workdir, cfg)
    with session.begin():
        for entry in reversed(list_entries(session, pipeline, limit=None)):
            refusal = _refusal(entry, workdir, cfg, options.force)
            if refusal is not None:
                skipped[entry.id] = refusal.removeprefix(f"entry {entry.id} ")
                continue
            plans.append(_plan(entry, cfg, workdir))
    groups: dict[str, list[RetryPlan]] = {}
    for plan in plans:
        groups.setdefault(json.dumps(plan.invocation.to_dict(), sort_keys=True), []).append(plan)
    outcomes: list[RetryOutcome] = []
    for group in groups.values():
        outcomes += _execute(group, session, workdir, cfg, options)
        options = replace(options, unlock=False, force_unlock=False)  # the first run did
    if skipped:
        outcomes.append(RetryOutcome(sorted(skipped), [], options.dry_run, skipped=skipped))
    return outcomes


def _refusal(entry, workdir: Path, cfg: dict, force: bool) -> str | None:
    """Why a non-retryable entry may not be retried now, or None (see `changes`).

    A non-retryable failure (bad input, bad configuration) would fail the same way again;
    it is retried when one of its inputs or the configuration changed since it failed
    (someone fixed the cause), or with --force.
    """
    if entry.retryable or force:
        return None
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
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "its failure"


def _plan(entry, cfg: dict, workdir: Path) -> RetryPlan:
    targets = list(entry.targets or [])
    if not targets:
        targets = targets_for(entry, cfg, study_sessions(workdir, cfg))
    invocation = Invocation.from_dict(entry.invocation)
    if not cfg and invocation == Invocation():  # another workflow, ingested by hand
        details = entry.error_details or {}
        invocation = from_command_line(details.get("command"), local=not entry.slurm_job_ids)
    return RetryPlan(
        entry_id=entry.id,
        job_key=entry.job_key,
        outputs=job_outputs(entry),
        targets=targets,
        invocation=invocation,
    )


def _execute(
    plans: list[RetryPlan], session: Session, workdir: Path, cfg: dict, options: RetryOptions
) -> list[RetryOutcome]:
    """One Snakemake run for plans sharing an invocation; resolve the jobs that succeeded.

    The run's outcome is written to a file first, then recorded in the database
    (`outcomes`): a database failure after Snakemake ran loses nothing."""
    workdir = Path(workdir)
    ids = [plan.entry_id for plan in plans]
    targets: list[str] = []
    for plan in plans:
        targets += [t for t in plan.targets if t not in targets]
    invocation = plans[0].invocation
    command = build_command(invocation, targets)
    outcome = RetryOutcome(ids, command, options.dry_run, targets=list(targets))
    if options.dry_run:
        return [outcome]
    check_lock(workdir, invocation, unlock=options.unlock, force=options.force_unlock)
    run = run_snakemake(command, workdir, echo=options.echo, stall_seconds=options.stall_seconds)
    outcome.returncode = run.returncode
    outcome.log_path = display_path(run.log_path, workdir) if run.log_path else None
    pending = PendingOutcome.after_run(plans, run.returncode, run.log_path, workdir)
    saved = save_pending(workdir, pending)
    try:
        recorded = record_outcome(session, workdir, cfg, pending)
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        reason = describe_failure(exc, session.get_bind())
        if reason is None:
            raise
        raise DatabaseUnavailable(_not_recorded(reason, run, outcome, saved)) from exc
    if saved is not None:
        saved.unlink(missing_ok=True)
    outcome.resolved, outcome.still_open = recorded.resolved, recorded.still_open
    outcome.new_entries = recorded.new_entries
    if run.log_path is None:
        require_log(run)
    return [outcome]


def _not_recorded(reason: str, run: SnakemakeRun, outcome: RetryOutcome, saved) -> str:
    ran = f"Snakemake ran (exit {run.returncode}, log {outcome.log_path or 'none'})"
    if saved is None:
        return (
            f"{reason}. {ran} but its outcome could not be recorded, nor saved to a file: "
            "run `neuroflow-recover ingest` once the database works again"
        )
    return (
        f"{reason}. {ran}; its outcome is saved in {saved} and the next command that writes "
        "(ingest, run, retry, retry-all) records it"
    )
