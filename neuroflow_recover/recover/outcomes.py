"""A retry's outcome, written to disk before the database records it, and recording it.

A retry that ran Snakemake must never lose what happened, whatever the database does next
(locked too long, disk full, a crash): the outcome goes first into a JSON file under
`.neuroflow/pending-retries/`, then into the database in one transaction, and the file is
removed. A file left behind is recorded by the next command that writes (`record_pending`).
Recording is idempotent: the log is ingested once (sha256), an entry resolved once, the
retry's attempt keyed by the file's name.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import LogFormatError
from ..logs.locations import run_id_of
from ..logs.parser import parse_log
from ..logsetup import get_logger
from ..queue.entries import AttemptEvent, add_event, get_entry, mark_resolved
from ..queue.ingest import IngestContext, ingest_log
from ..queue.models import AttemptHistory
from ..workflow.invocation import Invocation
from ..workflow.layout import job_key

log = get_logger(__name__)

PENDING_DIR = Path(".neuroflow") / "pending-retries"


@dataclass
class RetryPlan:
    """One entry of a retry: what re-runs it and what proves it succeeded."""

    entry_id: int
    job_key: str
    outputs: list[str]
    targets: list[str]
    invocation: Invocation


@dataclass
class PendingOutcome:
    """What a retry's Snakemake run did, as facts taken right after it ended."""

    name: str  # the journal file's stem, unique per retry run
    plans: list[dict]  # RetryPlan fields (invocation as a dict)
    returncode: int
    log_path: str | None  # absolute
    outputs_exist: dict[str, bool]  # entry id -> all of its job's outputs existed
    invocation: dict
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def after_run(cls, plans: list[RetryPlan], returncode: int, log_path: Path | None,
                  workdir: Path) -> PendingOutcome:  # fmt: skip
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return cls(
            name=f"{stamp}-{socket.gethostname()}-{os.getpid()}",
            plans=[asdict(plan) | {"invocation": plan.invocation.to_dict()} for plan in plans],
            returncode=returncode,
            log_path=str(Path(workdir, log_path).absolute()) if log_path else None,
            outputs_exist={
                str(plan.entry_id): all((workdir / path).exists() for path in plan.outputs)
                for plan in plans
            },
            invocation=plans[0].invocation.to_dict(),
        )


@dataclass
class Recorded:
    resolved: list[int] = field(default_factory=list)
    still_open: list[int] = field(default_factory=list)
    new_entries: list[int] = field(default_factory=list)  # other jobs that failed in the run


def save_pending(workdir: Path, pending: PendingOutcome) -> Path | None:
    """Write the outcome atomically; None (with a warning) when the disk refuses it."""
    directory = Path(workdir) / PENDING_DIR
    path = directory / f"{pending.name}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(pending), indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("cannot write the retry's outcome file", path=str(path), error=str(exc))
        return None
    return path


def pending_files(workdir: Path) -> list[Path]:
    return sorted((Path(workdir) / PENDING_DIR).glob("*.json"))


def record_pending(session: Session, workdir: Path, cfg: dict) -> list[Recorded]:
    """Record the outcomes earlier retries could not (one transaction each), oldest first."""
    recorded = []
    for path in pending_files(workdir):
        try:
            pending = PendingOutcome(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable retry outcome file left as it is", path=str(path),
                        error=str(exc))  # fmt: skip
            continue
        recorded.append(record_outcome(session, workdir, cfg, pending))
        path.unlink(missing_ok=True)
        log.warning("recorded the outcome of an earlier retry", file=str(path),
                    resolved=recorded[-1].resolved, still_open=recorded[-1].still_open)  # fmt: skip
    return recorded


def record_outcome(session: Session, workdir: Path, cfg: dict, pending: PendingOutcome) -> Recorded:
    """Put a retry's outcome into the database in ONE transaction: its log ingested (the
    retried entries left to this function), each entry resolved when its job succeeded
    (outputs exist, not failed again), else kept open with the attempt recorded."""
    workdir = Path(workdir)
    plans = [_plan(data) for data in pending.plans]
    recorded = Recorded()
    context = IngestContext.build(workdir, cfg, pending.invocation)
    log_path = Path(pending.log_path) if pending.log_path else None
    if log_path is not None and not log_path.is_file():
        log.warning("the retry's Snakemake log is gone", log=str(log_path))
        log_path = None
    with session.begin():
        failed_keys: set[str] = set()
        if log_path is not None:
            keys = [plan.job_key for plan in plans]
            result = ingest_log(session, context, log_path, leave_open=keys)
            failed_keys = {failure.job_key for failure in result.failures}
            if result.status == "already-ingested":  # by a concurrent `ingest`
                failed_keys = _failed_keys(log_path)
            ids = [plan.entry_id for plan in plans]
            recorded.new_entries = [i for i in result.entry_ids if i not in ids]
        for plan in plans:
            _conclude(session, plan, pending, plan.job_key in failed_keys, recorded)
    return recorded


def _plan(data: dict) -> RetryPlan:
    return RetryPlan(**(data | {"invocation": Invocation.from_dict(data["invocation"])}))


def _failed_keys(log_path: Path) -> set[str]:
    try:
        return {job_key(job.rule, job.wildcards) for job in parse_log(log_path).failed_jobs}
    except (OSError, LogFormatError):
        return set()


def _conclude(
    session: Session, plan: RetryPlan, pending: PendingOutcome, failed_again: bool, recorded: Recorded
) -> None:
    """Resolve the plan's entry when its job succeeded, else keep it open with the attempt
    recorded (ingest recorded it when the job failed visibly)."""
    entry = get_entry(session, plan.entry_id)
    if entry.resolved:  # meanwhile by someone else: nothing left to decide
        log.info("entry already resolved, outcome not applied", entry_id=plan.entry_id)
        return
    log_path = Path(pending.log_path) if pending.log_path else None
    run_name = run_id_of(log_path) if log_path else None
    outputs_exist = pending.outputs_exist.get(str(plan.entry_id), False)
    ran = log_path is not None or pending.returncode == 0
    if not failed_again and outputs_exist and ran:
        mark_resolved(
            entry,
            "retry",
            f"retried in Snakemake run {run_name or '(nothing to be done)'}: the job succeeded",
        )
        recorded.resolved.append(plan.entry_id)
        log.info("resolved by retry", entry_id=plan.entry_id, run=run_name)
        return
    recorded.still_open.append(plan.entry_id)
    key = f"retry:{pending.name}:{plan.entry_id}"
    known = session.scalar(select(AttemptHistory.id).where(AttemptHistory.event_key == key))
    if not failed_again and known is None:
        # the job did not run or did not fail visibly: still record the attempt
        add_event(
            session,
            entry,
            AttemptEvent(
                event_key=key,
                source="retry",
                run_id=run_name,
                exit_code=pending.returncode,
                error_type=entry.error_type,
                evidence=_retry_evidence(pending.returncode, outputs_exist),
                host=pending.host,
            ),
        )
    log.warning("retry did not succeed; entry stays open", entry_id=plan.entry_id)


def _retry_evidence(returncode: int, outputs_exist: bool) -> str:
    if not outputs_exist:
        return (
            f"retry: Snakemake exited {returncode} and the job's outputs are missing "
            "(it did not run, e.g. an upstream job failed)"
        )
    return f"retry: Snakemake exited {returncode}"
