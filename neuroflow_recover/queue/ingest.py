"""Ingest Snakemake main logs into the dead-letter queue.

For every job that failed for good in a log, the job's attempt records (written by the step
runner under `.neuroflow/attempts/`, within the run's time window) and the evidence from the
rule/SLURM logs give a classification: the last attempt record that actually ran wins (it
saw the tool's exit code and output); otherwise the evidence text is classified with the
exit code and SLURM state. The job then becomes (or extends) a dead-letter entry.

A job that finished successfully in a log AFTER its open entry's last failure (it was
re-run by a later `snakemake`, not by `retry`) closes that entry: resolved_by "snakemake",
the notes name the run and its log. Failure lines of the log that became no job (`RunLog.
not_understood`) and jobs that failed and then recovered in the same run are listed in the
result, never dropped silently.

Idempotent: a log is recorded by sha256 (read in chunks) and never ingested twice; attempts
are keyed (`event_key`) so the same attempt is never added twice either. One transaction
per log: a killed ingestion leaves the log fully ingested or not at all.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import shlex
import socket
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..classify.classifier import Classification, Classifier
from ..errors import DatabaseUnavailable, LogFormatError, NeuroflowError
from ..files import regular_file_problem
from ..logs.evidence import read_evidence
from ..logs.locations import display_path, main_logs, run_id_of, run_in_progress
from ..logs.parser import parse_log
from ..logs.records import FailedJob, NotUnderstood, RunLog
from ..logsetup import get_logger
from ..step.attempts import AttemptRecord, read_records
from ..times import as_utc, local_as_utc, parse_iso
from ..workflow.invocation import Invocation
from ..workflow.layout import RULE_STAGE, job_key, stage_of
from ..workflow.sheet import study_sessions
from ..workflow.targets import targets_for
from .database import describe_failure, is_conflict
from .entries import AttemptEvent, JobFailure, dead_letter_all, mark_resolved
from .models import DeadLetterEntry, IngestedLog
from .outbox import NotifySettings, enqueue_dead_letters

log = get_logger(__name__)

# records may start a little before the log's first time stamp and end after its last one
WINDOW_SLACK = timedelta(seconds=5)
HASH_CHUNK = 1 << 20  # logs are hashed 1 MiB at a time (a 100 MB log is never in memory)
# a log's transaction is run again after a unique-key or serialization conflict with
# another writer (cannot happen between neuroflow writers, which queue for the write lock;
# kept for writers that do not take it)
CONFLICT_ATTEMPTS = 3

Hold = Callable[[JobFailure], bool]


@dataclass
class LogIngest:
    """What one log gave."""

    path: str
    run_id: str
    status: str  # ingested | already-ingested | unreadable | in-progress | ingested-live
    failures: list[JobFailure] = field(default_factory=list)  # every failed job, classified
    entry_ids: list[int] = field(default_factory=list)  # entries created or extended
    held: list[JobFailure] = field(default_factory=list)  # not dead-lettered (to be retried)
    message: str = ""
    run_errors: list[str] = field(default_factory=list)  # the run's own (e.g. LockException)
    resolved_ids: list[int] = field(default_factory=list)  # entries whose job succeeded here
    not_understood: list[NotUnderstood] = field(default_factory=list)  # failure lines, no job
    recovered: list[str] = field(default_factory=list)  # "<job key> (N attempts)"

    @property
    def understood(self) -> bool:
        """Everything in the log that says a job failed became part of an entry."""
        return self.status != "unreadable" and not self.not_understood


@dataclass
class IngestReport:
    logs: list[LogIngest] = field(default_factory=list)

    def with_status(self, status: str) -> list[LogIngest]:
        return [item for item in self.logs if item.status == status]

    @property
    def entry_ids(self) -> list[int]:
        ids: list[int] = []
        for item in self.logs:
            ids.extend(i for i in item.entry_ids if i not in ids)
        return ids

    @property
    def failures(self) -> list[JobFailure]:
        return [failure for item in self.logs for failure in item.failures]

    @property
    def understood(self) -> bool:
        return all(item.understood for item in self.logs)

    def to_dict(self) -> dict:
        return {
            "logs": [
                {
                    "path": item.path,
                    "run_id": item.run_id,
                    "status": item.status,
                    "failed_jobs": len(item.failures),
                    "entry_ids": item.entry_ids,
                    "resolved_ids": item.resolved_ids,
                    "message": item.message,
                    "not_understood": [
                        {"line": n.line, "text": n.text, "why": n.why}
                        for n in item.not_understood
                    ],
                    "recovered": item.recovered,
                }
                for item in self.logs
            ],
            "entry_ids": self.entry_ids,
            "resolved_ids": [i for item in self.logs for i in item.resolved_ids],
        }


def ingest_logs(
    session: Session,
    workdir: Path,
    cfg: dict,
    paths: Iterable[str | os.PathLike] | None = None,
    *,
    invocation: dict | None = None,
) -> IngestReport:
    """Ingest `paths` (default: every main log under `.snakemake/log/` not ingested yet).

    Runs ONE transaction per log on `session`, which must not be inside a transaction.
    Unreadable logs and logs of a run still in progress are skipped with a warning.
    """
    workdir = Path(workdir)
    chosen = [Path(p) for p in paths] if paths else main_logs(workdir)
    report = IngestReport()
    context = IngestContext.build(workdir, cfg, invocation)
    for index, path in enumerate(chosen):
        try:
            report.logs.append(ingest_one(session, context, path))
        except (sa_exc.DBAPIError, sqlite3.Error) as exc:
            reason = describe_failure(exc, session.get_bind())
            if reason is None:
                raise
            shown = [display_path(p, workdir) for p in chosen[index:]]
            raise DatabaseUnavailable(not_committed_message(reason, report, shown)) from exc
    return report


def pending_logs(session: Session, workdir: Path) -> list[Path]:
    """Main logs under `.snakemake/log/` not ingested at their present size, oldest first:
    a name and a size per log, nothing hashed, so cheap when there is nothing new."""
    workdir = Path(workdir)
    known = set(session.execute(select(IngestedLog.path, IngestedLog.size)).tuples())
    pending = []
    for path in main_logs(workdir):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if (display_path(path, workdir), size) not in known:
            pending.append(path)
    return pending


def catch_up(session: Session, workdir: Path, cfg: dict) -> IngestReport:
    """Ingest the main logs no command ingested yet (a run killed before its end handler,
    or a plain `snakemake` whose handler could not write), except those of a live run."""
    workdir = Path(workdir)
    with session.begin():
        paths = logs_to_catch_up(session, workdir)
    if not paths:
        return IngestReport()
    return ingest_logs(session, workdir, cfg, paths)


def logs_to_catch_up(session: Session, workdir: Path) -> list[Path]:
    """`pending_logs` without the live run's (the newest, logs being named by start)."""
    paths = pending_logs(session, workdir)
    if paths and run_in_progress(workdir):
        paths = paths[:-1]
    return paths


def not_committed_message(reason: str, report: IngestReport, left: list[str]) -> str:
    """What a database failure in the middle of a batch left committed, in words."""
    done = [item.path for item in report.with_status("ingested")]
    committed = f"{len(done)} log(s) ingested and committed before it" + (
        f" ({', '.join(done)})" if done else ""
    )
    more = f" and {len(left) - 1} more log(s)" if len(left) > 1 else ""
    return (
        f"{reason}. {committed}, each in its own transaction; not committed: {left[0]}{more} "
        "(nothing of them was written). Fix the cause and run `neuroflow-recover ingest` "
        "again: committed logs are skipped."
    )


def ingest_one(
    session: Session,
    context: IngestContext,
    path: Path,
    *,
    hold: Hold | None = None,
    carried: Mapping[str, list[AttemptEvent]] | None = None,
) -> LogIngest:
    """One log in its own transaction on `session` (see `ingest_log`); run again after a
    conflict with another writer (it then finds what that writer committed)."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            with session.begin():
                return ingest_log(session, context, path, hold=hold, carried=carried)
        except sa_exc.DBAPIError as exc:
            if not is_conflict(exc) or attempt == CONFLICT_ATTEMPTS:
                raise
            log.info("conflict with another writer, ingesting the log again",
                     path=str(path), attempt=attempt, error=str(exc.orig))  # fmt: skip
    raise AssertionError("unreachable")


@dataclass
class IngestContext:
    """What classifying and targeting failures needs, loaded once per batch."""

    workdir: Path
    cfg: dict
    invocation: dict
    classifier: Classifier
    notify: NotifySettings
    _sessions: list | None = None
    _sessions_loaded: bool = False

    @classmethod
    def build(cls, workdir: Path, cfg: dict, invocation: dict | None = None) -> IngestContext:
        invocation = dict(invocation or {})
        return cls(
            workdir=Path(workdir),
            cfg=cfg,
            invocation=invocation,
            classifier=Classifier.from_config(cfg),
            notify=NotifySettings.from_config(cfg, _command(workdir, invocation)),
        )

    @property
    def sessions(self) -> list | None:
        """The sessions sheet (read on first use: only the workflow's own rules need it)."""
        if not self._sessions_loaded:
            self._sessions = study_sessions(self.workdir, self.cfg)
            self._sessions_loaded = True
        return self._sessions


def ingest_log(
    session: Session,
    context: IngestContext,
    path: Path,
    *,
    hold: Hold | None = None,
    carried: Mapping[str, list[AttemptEvent]] | None = None,
    leave_open: Collection[str] = (),
    run_ended: bool = False,
) -> LogIngest:
    """Ingest one log inside the caller's transaction.

    `hold(failure) -> True` keeps a failure out of the queue (the runner retries it);
    `carried` maps job keys to attempts of earlier rounds that are put before this run's;
    entries of the job keys in `leave_open` are not closed by a success in this log (the
    caller, `retry`, decides about them); `run_ended`: the log's run has ended although its
    lock is still held (the run's own end handler ingests it).
    """
    path = Path(path)
    shown = display_path(path, context.workdir)
    read = _read_new_log(session, context, path, shown, run_ended)
    if isinstance(read, LogIngest):
        return read
    run_log, digest, size = read
    result = LogIngest(
        shown, run_log.run_id, "ingested", run_errors=list(run_log.errors),
        not_understood=list(run_log.not_understood),
        recovered=[
            f"{job_key(job.rule, job.wildcards, job.failures[-1].output)}"
            f" (jobid {job.jobid}, {job.attempts} attempts)"
            for job in run_log.recovered
        ],
    )  # fmt: skip
    _dead_letter_jobs(session, context, run_log, run_log.failed_jobs, result, hold, carried)
    result.resolved_ids = close_succeeded(session, run_log, shown, leave_open)
    session.add(
        IngestedLog(
            path=shown,
            sha256=digest,
            size=size,
            run_id=run_log.run_id,
            n_failed=len(run_log.failed_jobs),
            host=socket.gethostname(),
        )
    )
    session.flush()
    return result


def ingest_live(
    session: Session,
    context: IngestContext,
    path: Path,
    jobids: Collection[int],
    *,
    hold: Hold | None = None,
) -> LogIngest:
    """While a run goes on: dead-letter the jobs `jobids` that its log so far shows failed
    for good (the logger plugin decided they are), inside the caller's transaction. The log
    is not recorded as ingested: the run's end-of-run ingest reads it whole and, the
    attempts being keyed, adds nothing for these jobs."""
    path = Path(path)
    shown = display_path(path, context.workdir)
    try:
        run_log = parse_log(path)
    except LogFormatError as exc:
        return LogIngest(shown, run_id_of(path), "unreadable", message=str(exc))
    result = LogIngest(shown, run_log.run_id, "ingested-live")
    wanted = set(jobids)
    jobs = [job for job in run_log.failed_jobs if job.jobid in wanted]
    _dead_letter_jobs(session, context, run_log, jobs, result, hold, None)
    return result


def _dead_letter_jobs(session, context, run_log, jobs, result, hold, carried) -> list:
    """Classify `jobs`, hold what `hold` keeps, dead-letter the rest and put ONE
    notification of the new entries in the outbox (all in the caller's transaction)."""
    queue = []
    for failure in _failures(context, run_log, jobs):
        _put_carried_first(failure, (carried or {}).get(failure.job_key, []))
        result.failures.append(failure)
        if hold is not None and hold(failure):
            result.held.append(failure)
        else:
            queue.append(failure)
    new_entries = []
    for queued in dead_letter_all(session, queue):
        entry, failure = queued.entry, queued.failure
        if entry is None:  # every attempt recorded before, e.g. live by the plugin
            if queued.was_open is not None:
                result.entry_ids.append(queued.was_open.id)
            continue
        result.entry_ids.append(entry.id)
        if queued.was_open is None:
            new_entries.append(entry)
        log.warning(
            "dead-lettered",
            entry_id=entry.id,
            rule=failure.rule,
            wildcards=failure.wildcards,
            error_type=failure.error_type,
            attempts=entry.attempts,
        )
    enqueue_dead_letters(session, new_entries, context.notify)
    return new_entries


def _read_new_log(
    session: Session, context: IngestContext, path: Path, shown: str, run_ended: bool
) -> tuple[RunLog, str, int] | LogIngest:
    """(parsed log, sha256, size) of a log to ingest, or why it is not ingested now:
    unreadable, already ingested, or the log of a run still in progress."""
    run_id = run_id_of(path)
    problem = regular_file_problem(path)
    if problem is not None:  # a FIFO would block, a device may never end
        log.warning("cannot read log, skipped", path=shown, error=problem)
        return LogIngest(shown, run_id, "unreadable", message=problem)
    try:
        digest, size = file_digest(path)
    except OSError as exc:
        log.warning("cannot read log, skipped", path=shown, error=str(exc))
        return LogIngest(shown, run_id, "unreadable", message=str(exc))
    if session.scalar(select(IngestedLog.id).where(IngestedLog.sha256 == digest)) is not None:
        log.info("log already ingested", path=shown)
        return LogIngest(shown, run_id, "already-ingested")
    locked = not run_ended and run_in_progress(context.workdir)
    try:
        run_log = parse_log(path)
    except LogFormatError as exc:
        if locked:
            return _in_progress(shown, run_id)
        log.warning("not a Snakemake log we can read, skipped", path=shown, error=str(exc))
        return LogIngest(shown, run_id, "unreadable", message=str(exc))
    if locked and not run_log.complete:
        return _in_progress(shown, run_log.run_id)
    return run_log, digest, size


def _put_carried_first(failure: JobFailure, earlier: list[AttemptEvent]) -> None:
    """Attempts of earlier rounds go before this run's; a record of the previous round may
    also fall in this run's time window (WINDOW_SLACK): it is the same attempt, kept once."""
    if not earlier:
        return
    seen = {event.event_key for event in earlier}
    failure.events = list(earlier) + [e for e in failure.events if e.event_key not in seen]


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def close_succeeded(
    session: Session, run_log: RunLog, shown: str, leave_open: Collection[str] = ()
) -> list[int]:
    """Resolve open entries whose job finished successfully in `run_log` after their last
    failure (resolved_by "snakemake"); returns their IDs."""
    if not run_log.succeeded:
        return []
    rows = session.execute(
        select(DeadLetterEntry.id, DeadLetterEntry.job_key, DeadLetterEntry.failed_at).where(
            DeadLetterEntry.resolved.is_(False)
        )
    ).all()
    open_entries = {key: (entry_id, as_utc(failed)) for entry_id, key, failed in rows}
    closed: list[int] = []
    for job in run_log.succeeded:
        key = job_key(job.rule, job.wildcards, job.output)
        if key not in open_entries or key in leave_open:
            continue
        entry_id, failed_at = open_entries[key]
        finished = local_as_utc(job.finished_at) or local_as_utc(run_log.finished_at)
        if finished is None or failed_at is None or finished <= failed_at:
            continue  # an older success (logs ingested out of order) proves nothing
        entry = session.get(DeadLetterEntry, entry_id)
        mark_resolved(
            entry,
            "snakemake",
            f"the job succeeded in Snakemake run {run_log.run_id} (log {shown}, "
            f"finished {finished.isoformat(timespec='seconds')})",
        )
        del open_entries[key]
        closed.append(entry_id)
        log.info("resolved: the job succeeded in a later run", entry_id=entry_id, log=shown)
    session.flush()
    return closed


def _in_progress(shown: str, run_id: str) -> LogIngest:
    log.warning(
        "log of a run still in progress (Snakemake holds .snakemake/locks), skipped", path=shown
    )
    return LogIngest(shown, run_id, "in-progress", message="run in progress")


def _failures(
    context: IngestContext, run_log: RunLog, jobs: Iterable[FailedJob]
) -> list[JobFailure]:
    """The failed jobs `jobs` of a log, classified; distinct jobs never share a key (two error blocks
    that name neither wildcards nor outputs are told apart by their jobid)."""
    failures: list[JobFailure] = []
    seen: set[str] = set()
    for job in jobs:
        failure = build_failure(context, run_log, job)
        if failure.job_key in seen:
            failure.identity = f"{failure.job_key}#{run_log.run_id}:line{job.line}"
            log.warning("two failed jobs look alike; keyed by their line", key=failure.job_key)
        seen.add(failure.job_key)
        failures.append(failure)
    return failures


def build_failure(context: IngestContext, run_log: RunLog, job: FailedJob) -> JobFailure:
    """Classify one failed job of a run and gather everything the queue keeps about it."""
    workdir = context.workdir
    records = _records_in_window(workdir, job, run_log)
    found, exit_code = _classification(context, job, records)
    error_class, retryable = found.error_class, found.retryable
    resource, pattern_id, evidence = found.resource, found.pattern_id, found.evidence
    failed_at = local_as_utc(job.failed_at) or local_as_utc(run_log.finished_at) or datetime.now(UTC)
    failure = JobFailure(
        rule=job.rule,
        wildcards=dict(job.wildcards),
        pipeline_name=stage_of(job.rule),
        error_type=error_class,
        retryable=retryable,
        error_message=job.message or "",
        events=[],
        evidence=evidence,
        pattern_id=pattern_id,
        resource=resource,
        exit_code=exit_code,
        slurm_state=job.slurm_state,
        jobid=None if job.synthetic_jobid else job.jobid,
        run_id=run_log.run_id,
        failed_at=failed_at,
        log_paths=_log_paths(job, records, workdir),
        slurm_job_ids=list(job.slurm_job_ids),
        invocation=_invocation(run_log, context.invocation),
        error_details={
            "output": list(job.output),
            "input": _job_input(job),
            "log_files": list(job.log_files),
            "main_log": display_path(Path(job.log_path), workdir),
            "slurm_log": job.slurm_log,
            "shell": job.shell,
            "snakemake_exit_code": job.exit_code,
            "tail": _tail_of(records),
            "printed": job.printed or None,
            "submit_failed": job.submit_failed,
            "main_log_line": job.line or None,
            "command": run_log.command,
        },
    )
    sessions = context.sessions if job.rule in RULE_STAGE else None
    failure.targets = targets_for(failure, context.cfg, sessions)
    failure.events = _events(job, run_log, records, failure, context.classifier)
    return failure


def _command(workdir: Path, invocation: dict) -> str:
    """How a reader of a notification calls neuroflow-recover for this workflow."""
    words = ["neuroflow-recover", "-d", str(Path(workdir).absolute())]
    for name in invocation.get("configfiles") or []:
        words += ["--configfile", name]
    return shlex.join(words)


def _invocation(run_log: RunLog, default: dict) -> dict:
    """What the run was started with, for `retry`: the command line the log's header shows
    (config files, profile, options), else `default` (the caller's)."""
    if not run_log.command:
        return dict(default)
    try:
        return copy.deepcopy(_logged_invocation(run_log.command))
    except ValueError:  # unbalanced quotes: the caller's invocation then
        return dict(default)


@functools.lru_cache(maxsize=16)
def _logged_invocation(command: str) -> dict:
    """Parsed once per log, not once per failed job (Snakemake's parser takes ~10 ms)."""
    return Invocation.from_snakemake_argv(shlex.split(command)[1:]).to_dict()


def _classification(
    context: IngestContext, job: FailedJob, records: list[AttemptRecord]
) -> tuple[Classification, int | None]:
    """(class, exit code) of a failed job: its last attempt record that ran the tool, when
    the record covers the last attempt; else its evidence with exit code and SLURM state."""
    ran = [r for r in records if not r.skipped and r.error_class]
    if ran and max(r.attempt for r in records) >= job.attempts:
        chosen = ran[-1]
        found = Classification(
            chosen.error_class, bool(chosen.retryable), chosen.resource, chosen.pattern_id,
            chosen.evidence,
        )  # fmt: skip
        return found, chosen.exit_code
    evidence_text = ""
    try:
        evidence_text = read_evidence(job, context.workdir) or ""
    except (OSError, NeuroflowError) as exc:
        log.warning("cannot read evidence", rule=job.rule, error=str(exc))
    found = context.classifier.classify(
        evidence_text or job.message or "", exit_code=job.exit_code, slurm_state=job.slurm_state
    )
    return found, job.exit_code


def _tail_of(records: list[AttemptRecord]) -> list[str]:
    """The output tail of the last attempt that was not deferred (deferred ones ran nothing)."""
    kept = [record for record in records if not record.deferred] or records
    return list(kept[-1].tail) if kept else []


def _job_input(job) -> list[str]:
    """The failed job's input files, from its last job block that lists them."""
    for attempt in reversed(getattr(job, "attempt_details", None) or []):
        if attempt.input:
            return list(attempt.input)
    return []


def _events(
    job: FailedJob, run_log: RunLog, records: list[AttemptRecord], failure: JobFailure,
    classifier: Classifier,
) -> list[AttemptEvent]:
    """One history event per attempt: from its attempt record, else from the main log."""
    events = [
        _record_event(job, run_log, record, failure)
        for record in records
        # a deferred record is not an attempt of the tool: `run` re-runs it after a backoff
        # (its number still counts as recorded, so no main-log event stands in for it)
        if not record.deferred
    ]
    recorded = {record.attempt for record in records}
    events += [
        _log_event(job, run_log, number, failure, classifier)
        for number in range(1, max(job.attempts, 1) + 1)
        if number not in recorded
    ]
    events.sort(key=lambda e: (e.started_at or datetime.min.replace(tzinfo=UTC)))
    return events


def _detail(job: FailedJob, number: int):
    """The main log's job block of attempt `number` of the job, if printed."""
    details = job.attempt_details
    return details[number - 1] if 0 < number <= len(details) else None


def _slurm_id(job: FailedJob, number: int, detail) -> str | None:
    if detail is not None and detail.slurm_job_id:
        return detail.slurm_job_id
    ids = job.slurm_job_ids
    return ids[number - 1] if 0 < number <= len(ids) else None


def _record_event(
    job: FailedJob, run_log: RunLog, record: AttemptRecord, failure: JobFailure
) -> AttemptEvent:
    detail = _detail(job, record.attempt)
    last = record.attempt == max(job.attempts, 1)
    return AttemptEvent(
        event_key=f"record:{failure.job_key}:{record.started_at}:{record.attempt}",
        source="attempt-record",
        run_id=run_log.run_id,
        started_at=parse_iso(record.started_at),
        ended_at=parse_iso(record.ended_at),
        exit_code=record.exit_code,
        error_type=record.error_class or ("skipped" if record.skipped else None),
        resource=record.resource,
        pattern_id=record.pattern_id,
        # an attempt the step runner did not start shows its "not starting ..." line
        evidence=record.tail[0] if record.skipped and record.tail else record.evidence,
        resources=dict(record.resources or {}),
        slurm_job_id=record.slurm_job_id or _slurm_id(job, record.attempt, detail),
        slurm_state=getattr(detail, "slurm_state", None) or (job.slurm_state if last else None),
        host=record.host or None,
        peak_mem_mb=record.peak_mem_mb,
        elapsed_s=record.elapsed_s,
        cpu_s=record.cpu_s,
        usage_source=record.usage_source,
        ran=not record.skipped,
    )


def _log_event(
    job: FailedJob, run_log: RunLog, number: int, failure: JobFailure, classifier: Classifier
) -> AttemptEvent:
    """An attempt without a record: the last one is the failure itself, an earlier one is
    classified from what the main log says about it."""
    detail = _detail(job, number)
    if number == max(job.attempts, 1):
        found = Classification(
            failure.error_type, failure.retryable, failure.resource, failure.pattern_id,
            failure.evidence,
        )  # fmt: skip
        exit_code, state, ended = job.exit_code, job.slurm_state, failure.failed_at
    else:
        exit_code = getattr(detail, "exit_code", None)
        state = getattr(detail, "slurm_state", None)
        ended = local_as_utc(getattr(detail, "ended_at", None))
        text = "\n".join(
            part for part in (getattr(detail, "message", ""), getattr(detail, "printed", "")) if part
        )
        found = classifier.classify(text, exit_code=exit_code, slurm_state=state)
    return AttemptEvent(
        # the same run's main log and console output give the same keys (9.x: its UUID)
        event_key=f"log:{run_log.workflow_id or run_log.run_id}:{job.jobid}:{number}",
        source="snakemake-log",
        run_id=run_log.run_id,
        started_at=local_as_utc(detail.started_at) if detail else None,
        ended_at=ended,
        exit_code=exit_code,
        error_type=found.error_class,
        resource=found.resource,
        pattern_id=found.pattern_id,
        evidence=found.evidence,
        resources=_int_resources(detail.resources if detail else job.resources),
        slurm_job_id=_slurm_id(job, number, detail),
        slurm_state=state,
        host=None,
    )


def _records_in_window(workdir: Path, job, run_log) -> list[AttemptRecord]:
    records = read_records(workdir, job.rule, job.wildcards)
    if not records:
        return []
    start = local_as_utc(run_log.started_at)
    end = local_as_utc(run_log.finished_at) or local_as_utc(job.failed_at)
    if end is None:
        try:
            end = datetime.fromtimestamp(Path(run_log.path).stat().st_mtime, UTC)
        except OSError:
            end = datetime.now(UTC)
    chosen = []
    for record in records:
        moment = parse_iso(record.started_at)
        if moment is None:
            continue
        if start is not None and moment < start - WINDOW_SLACK:
            continue
        if moment > end + WINDOW_SLACK:
            continue
        chosen.append(record)
    return chosen


def _log_paths(job, records: list[AttemptRecord], workdir: Path) -> list[str]:
    paths = [display_path(Path(job.log_path), workdir)]
    paths += list(job.log_files)
    if job.slurm_log:
        paths.append(job.slurm_log)
    paths += [record.log for record in records if record.log]
    return list(dict.fromkeys(path for path in paths if path))


def _int_resources(resources: Mapping | None) -> dict:
    out: dict = {}
    for key, value in (resources or {}).items():
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            out[key] = value
    return out
