"""Dead-letter queue bookkeeping: add or extend entries, list, get, resolve.

Every function takes a Session and never commits: the caller owns the transaction.
A failure of a job that already has an unresolved entry (same `job_key`: rule + wildcards, or
rule + first output when the wildcards are unknown) extends that entry (history rows,
attempts, latest error) instead of adding a second one.
History rows are keyed by `event_key`, so recording the same attempt twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ..errors import EntryNotFound, NeuroflowError
from ..times import as_utc, iso, utc_now
from ..workflow.layout import job_key
from .models import OPEN, AttemptHistory, DeadLetterEntry
from .stats import queue_stats

SOURCES = ("snakemake-log", "attempt-record", "retry")


@dataclass
class AttemptEvent:
    """One attempt of a failed job, as it goes into the history table."""

    event_key: str  # unique: "<run_id>:<jobid>:<n>" or "record:<attempt record path>"
    source: str  # one of SOURCES
    run_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    error_type: str | None = None
    resource: str | None = None
    pattern_id: str | None = None
    evidence: str | None = None
    resources: dict = field(default_factory=dict)
    slurm_job_id: str | None = None
    slurm_state: str | None = None
    host: str | None = None
    # what the attempt used (from its record; None when it left none)
    peak_mem_mb: int | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None
    usage_source: str | None = None
    # the tool really ran in this attempt (False: a record of an attempt the step runner
    # did not start); not stored, the runner counts real attempts with it
    ran: bool = True


def real_attempts(events: list[AttemptEvent]) -> int:
    """How many of `events` really ran the tool (what retry policies count)."""
    return sum(1 for event in events if event.ran)


@dataclass
class JobFailure:
    """A job that failed for good in one Snakemake run, classified, ready to dead-letter."""

    rule: str
    wildcards: dict[str, str]
    pipeline_name: str
    error_type: str
    retryable: bool
    error_message: str
    events: list[AttemptEvent]
    evidence: str | None = None
    pattern_id: str | None = None
    resource: str | None = None
    exit_code: int | None = None
    slurm_state: str | None = None
    jobid: int | None = None
    run_id: str | None = None
    failed_at: datetime | None = None
    targets: list[str] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)
    slurm_job_ids: list[str] = field(default_factory=list)
    invocation: dict = field(default_factory=dict)
    error_details: dict = field(default_factory=dict)
    identity: str | None = None  # the job key when rule + wildcards/outputs do not tell

    @property
    def job_key(self) -> str:
        return self.identity or job_key(
            self.rule, self.wildcards, self.error_details.get("output") or ()
        )


@dataclass
class Queued:
    """What `dead_letter_all` did with one failure."""

    failure: JobFailure
    entry: DeadLetterEntry | None  # None: every attempt of the failure was recorded before
    was_open: DeadLetterEntry | None  # the job's unresolved entry before the failure came


def dead_letter(session: Session, failure: JobFailure) -> DeadLetterEntry | None:
    """Add `failure` to the queue: a new entry, or new history on the job's open entry.

    Returns the entry, or None when every attempt of the failure is already recorded.
    """
    return dead_letter_all(session, [failure])[0].entry


def dead_letter_all(session: Session, failures: list[JobFailure]) -> list[Queued]:
    """`dead_letter` for many failures in a few statements (a day's log holds thousands)."""
    for failure in failures:
        _check_sources(failure.events)
    known = _known_event_keys(session, [e.event_key for f in failures for e in f.events])
    opened = _open_entries(session, {failure.job_key for failure in failures})
    counts = _history_counts(session, [entry.id for entry in opened.values()])
    recorded = {key: counts.get(entry.id, 0) for key, entry in opened.items()}
    done, rows = [], []
    for failure in failures:
        key, was_open = failure.job_key, opened.get(failure.job_key)
        new_events = _new_events(failure.events, known)
        if failure.events and not new_events:
            done.append(Queued(failure, None, was_open))
            continue
        entry = opened[key] = was_open or _new_entry(session, failure)
        _update_entry(entry, failure)
        first = recorded.get(key, 0) + 1
        rows += [(entry, number, event) for number, event in enumerate(new_events, first)]
        entry.attempts = recorded[key] = first - 1 + len(new_events)
        done.append(Queued(failure, entry, was_open))
    session.flush()  # the new entries get their ids
    session.add_all(_history_row(entry.id, number, event) for entry, number, event in rows)
    session.flush()
    for entry in opened.values():
        session.expire(entry, ["history"])
    return done


def _check_sources(events: list[AttemptEvent]) -> None:
    for event in events:
        if event.source not in SOURCES:
            raise ValueError(f"unknown history source {event.source!r}")


def _known_event_keys(session: Session, keys: list[str]) -> set[str]:
    known: set[str] = set()
    for chunk in _chunks(sorted(set(keys))):
        where = AttemptHistory.event_key.in_(chunk)
        known.update(session.scalars(select(AttemptHistory.event_key).where(where)))
    return known


def _open_entries(session: Session, keys: set[str]) -> dict[str, DeadLetterEntry]:
    found: dict[str, DeadLetterEntry] = {}
    for chunk in _chunks(sorted(keys)):
        query = select(DeadLetterEntry).where(DeadLetterEntry.job_key.in_(chunk), OPEN)
        found.update((entry.job_key, entry) for entry in session.scalars(query))
    return found


def _history_counts(session: Session, entry_ids: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for chunk in _chunks(sorted(entry_ids)):
        query = (
            select(AttemptHistory.entry_id, func.count(AttemptHistory.id))
            .where(AttemptHistory.entry_id.in_(chunk))
            .group_by(AttemptHistory.entry_id)
        )
        counts.update((entry_id, n) for entry_id, n in session.execute(query))
    return counts


def _chunks(items: list, size: int = 500):
    """`items` in slices small enough for any database's limit on bound parameters."""
    return (items[i : i + size] for i in range(0, len(items), size))


def _new_events(events: list[AttemptEvent], known: set[str]) -> list[AttemptEvent]:
    """The events not recorded yet, each attempt once even if listed twice."""
    new = []
    for event in events:
        if event.event_key not in known:
            known.add(event.event_key)
            new.append(event)
    return new


def _new_entry(session: Session, failure: JobFailure) -> DeadLetterEntry:
    entry = DeadLetterEntry(
        rule=failure.rule,
        wildcards=dict(failure.wildcards),
        job_key=failure.job_key,
        pipeline_name=failure.pipeline_name,
        subject_id=failure.wildcards.get("subject"),
        session_id=failure.wildcards.get("session"),
        resolved=False,
        created_at=utc_now(),
    )
    session.add(entry)
    return entry


def _update_entry(entry: DeadLetterEntry, failure: JobFailure) -> None:
    """The entry says what the latest failure of its job says."""
    entry.pipeline_run_id = storable_int(failure.jobid)
    entry.error_type = failure.error_type
    entry.retryable = failure.retryable
    entry.error_message = failure.error_message or ""
    entry.error_details = dict(failure.error_details)
    entry.evidence = failure.evidence
    entry.pattern_id = failure.pattern_id
    entry.resource = failure.resource
    entry.exit_code = storable_int(failure.exit_code)
    entry.slurm_state = failure.slurm_state
    entry.run_id = failure.run_id
    entry.failed_at = as_utc(failure.failed_at) or utc_now()
    if failure.targets:
        entry.targets = list(failure.targets)
    entry.log_paths = _union(entry.log_paths, failure.log_paths)
    entry.slurm_job_ids = _union(entry.slurm_job_ids, failure.slurm_job_ids)
    if failure.invocation:
        entry.invocation = dict(failure.invocation)
    entry.updated_at = utc_now()


def add_event(session: Session, entry: DeadLetterEntry, event: AttemptEvent) -> AttemptHistory:
    """Append one attempt to an entry's history (numbered after the existing ones)."""
    _check_sources([event])
    number = _history_counts(session, [entry.id]).get(entry.id, 0) + 1
    row = _history_row(entry.id, number, event)
    session.add(row)
    session.flush()
    entry.attempts = number
    session.expire(entry, ["history"])
    return row


def _history_row(entry_id: int, number: int, event: AttemptEvent) -> AttemptHistory:
    return AttemptHistory(
        entry_id=entry_id,
        event_key=event.event_key,
        attempt=number,
        run_id=event.run_id,
        started_at=as_utc(event.started_at),
        ended_at=as_utc(event.ended_at),
        exit_code=storable_int(event.exit_code),
        error_type=event.error_type,
        resource=event.resource,
        pattern_id=event.pattern_id,
        evidence=event.evidence,
        resources=dict(event.resources or {}),
        slurm_job_id=event.slurm_job_id,
        slurm_state=event.slurm_state,
        host=event.host,
        source=event.source,
        peak_mem_mb=event.peak_mem_mb,
        elapsed_s=event.elapsed_s,
        cpu_s=event.cpu_s,
        usage_source=event.usage_source,
    )


def get_entry(session: Session, entry_id: int) -> DeadLetterEntry:
    entry = None
    if 0 < entry_id <= MAX_ID:  # beyond the column's range no entry can have that id
        entry = session.get(
            DeadLetterEntry, entry_id, options=[selectinload(DeadLetterEntry.history)]
        )
    if entry is None:
        raise EntryNotFound(f"no dead-letter entry with ID {entry_id}")
    return entry


def list_entries(
    session: Session,
    pipeline: str | None = None,
    *,
    include_resolved: bool = False,
    limit: int | None = 20,
) -> list[DeadLetterEntry]:
    """Entries newest first; unresolved only unless `include_resolved`."""
    query = select(DeadLetterEntry)
    if not include_resolved:
        query = query.where(DeadLetterEntry.resolved.is_(False))
    if pipeline:
        query = query.where(DeadLetterEntry.pipeline_name == pipeline)
    query = query.order_by(DeadLetterEntry.created_at.desc(), DeadLetterEntry.id.desc())
    if limit is not None:
        query = query.limit(min(limit, MAX_ID))  # more than any table holds: all of them
    return list(session.scalars(query))


def resolve_entry(
    session: Session, entry_id: int, resolved_by: str, notes: str | None = None
) -> DeadLetterEntry:
    entry = get_entry(session, entry_id)
    if entry.resolved:
        raise NeuroflowError(
            f"dead-letter entry {entry_id} is already resolved "
            f"(by {entry.resolved_by} at {iso(entry.resolved_at)})"
        )
    mark_resolved(entry, resolved_by, notes)
    return entry


def mark_resolved(entry: DeadLetterEntry, resolved_by: str, notes: str | None) -> None:
    entry.resolved = True
    entry.resolved_at = utc_now()
    entry.resolved_by = resolved_by
    entry.resolution_notes = notes
    entry.updated_at = utc_now()


def entry_summary(entry: DeadLetterEntry) -> dict:
    """The fields `list` shows (and prints with --json)."""
    return {
        "id": entry.id,
        "pipeline": entry.pipeline_name,
        "subject": entry.subject_id,
        "session": entry.session_id,
        "rule": entry.rule,
        "job_key": entry.job_key,
        "error_type": entry.error_type,
        "resource": entry.resource,
        "attempts": entry.attempts,
        "retryable": entry.retryable,
        "resolved": entry.resolved,
        "resolved_by": entry.resolved_by,
        "failed_at": iso(entry.failed_at),
        "created_at": iso(entry.created_at),
    }


def entry_details(entry: DeadLetterEntry) -> dict:
    """Everything about an entry (what `show` prints), history included."""
    data = entry_summary(entry)
    data.update(
        {
            "pipeline_run_id": entry.pipeline_run_id,
            "run_id": entry.run_id,
            "wildcards": entry.wildcards,
            "error_message": entry.error_message,
            "error_details": entry.error_details,
            "evidence": entry.evidence,
            "pattern_id": entry.pattern_id,
            "exit_code": entry.exit_code,
            "slurm_state": entry.slurm_state,
            "targets": entry.targets,
            "log_paths": entry.log_paths,
            "slurm_job_ids": entry.slurm_job_ids,
            "invocation": entry.invocation,
            "updated_at": iso(entry.updated_at),
            "resolved_at": iso(entry.resolved_at),
            "resolution_notes": entry.resolution_notes,
            "history": entry.retry_history,
        }
    )
    return data


# the range of the integer columns (64-bit; ids are 32-bit, see MAX_ID)
INT64_RANGE = (-(2**63), 2**63 - 1)
MAX_ID = 2**31 - 1  # entry ids are `integer` on PostgreSQL: a larger id names no entry


def storable_int(value: int | None) -> int | None:
    """`value`, or None when a 64-bit column cannot hold it (a garbled log's exit code)."""
    if value is None or INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        return value
    return None


def _union(old: list | None, new: list | None) -> list:
    merged = list(old or [])
    for item in new or []:
        if item not in merged:
            merged.append(item)
    return merged


class DeadLetterQueue:
    """The seed's `DeadLetterQueue` API over a session factory; each call is one transaction.

    The CLI and runner use the functions above (they own their transactions); this facade
    keeps the seed's names for scripts written against it.
    """

    def __init__(self, sessions: Callable[[], Session]):
        self.sessions = sessions

    def add(self, failure: JobFailure) -> DeadLetterEntry | None:
        with self.sessions() as session, session.begin():
            return dead_letter(session, failure)

    def get_unresolved(self, limit: int = 50) -> list[DeadLetterEntry]:
        with self.sessions() as session:
            return list_entries(session, limit=limit)

    def get_by_pipeline(self, pipeline_name: str) -> list[DeadLetterEntry]:
        with self.sessions() as session:
            return list_entries(session, pipeline_name, limit=None)

    def resolve(self, entry_id: int, resolved_by: str, notes: str | None = None) -> bool:
        try:
            with self.sessions() as session, session.begin():
                resolve_entry(session, entry_id, resolved_by, notes)
        except EntryNotFound:
            return False
        return True

    def get_stats(self) -> dict:
        with self.sessions() as session:
            return queue_stats(session)
