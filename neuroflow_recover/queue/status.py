"""Where every session stands: done, failed, running, pending or blocked, stage by stage.

Computed from what is on disk and in the queue, without Snakemake's DAG: the layout's
declared outputs (done), the open dead-letter entries (failed), the step runner's in-flight
markers while a Snakemake run holds the directory (running), and the order of the stages
(blocked: an upstream stage of the session failed; QSIPrep runs per subject, so its failure
blocks every session of the subject).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ..logs.locations import run_in_progress
from ..step.attempts import running_markers
from ..times import as_utc, iso, parse_iso, utc_now
from ..workflow.layout import STAGE_RULE, Layout, job_key
from ..workflow.sheet import Session
from .models import DeadLetterEntry

STAGES = ("bids_conversion", "qsiprep", "qsirecon", "qsiparc")
STATES = ("done", "failed", "running", "blocked", "pending")


@dataclass
class Cell:
    """One stage of one session."""

    state: str  # one of STATES
    since: str | None = None  # ISO UTC: outputs written, failed, or attempt started
    entry_id: int | None = None  # the open dead-letter entry (failed)
    error_type: str | None = None
    evidence: str | None = None
    slurm_job_id: str | None = None  # running under SLURM


@dataclass
class SessionStatus:
    subject: str
    session: str
    stages: dict[str, Cell]


@dataclass
class OpenEntry:
    """An unresolved entry, as the status report lists it."""

    id: int
    pipeline: str
    subject: str | None
    session: str | None
    error_type: str
    evidence: str | None
    failed_at: str | None


@dataclass
class Board:
    generated_at: str
    sessions: list[SessionStatus]
    entries: list[OpenEntry] = field(default_factory=list)
    # (day, pipeline, error class) -> entries whose last failure was that day (resolved too)
    failures_by_day: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """stage -> state -> sessions."""
        counts = {stage: dict.fromkeys(STATES, 0) for stage in STAGES}
        for row in self.sessions:
            for stage, cell in row.stages.items():
                counts[stage][cell.state] += 1
        return counts

    def to_dict(self) -> dict:
        return {
            "generated_at": self.generated_at,
            "counts": self.counts(),
            "sessions": [
                {
                    "subject": row.subject,
                    "session": row.session,
                    "stages": {stage: asdict(cell) for stage, cell in row.stages.items()},
                }
                for row in self.sessions
            ],
            "open_entries": [asdict(entry) for entry in self.entries],
            "failures_by_day": [
                {"day": day, "pipeline": pipeline, "error_type": error, "entries": n}
                for (day, pipeline, error), n in sorted(self.failures_by_day.items())
            ],
        }


class _Listing:
    """Directory listings, each read once: does a file exist, and when was it written."""

    def __init__(self):
        self.names: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        directory, _, name = path.rpartition("/")
        names = self.names.get(directory)
        if names is None:
            try:
                names = frozenset(os.listdir(directory or "."))
            except OSError:
                names = frozenset()
            self.names[directory] = names
        return name in names

    def all_exist(self, paths: list[str]) -> bool:
        return all(self.exists(path) for path in paths)


def build_board(
    db: DbSession, workdir: Path, cfg: dict, sessions: list[Session], *, subject: str | None = None
) -> Board:
    """The status of every session of the sheet (of `subject` only, if given)."""
    workdir = Path(workdir)
    layout = Layout.from_config(cfg).within(workdir)
    entries = _open_entries(db)
    running = running_markers(workdir) if run_in_progress(workdir) else {}
    cells = _Cells(layout, entries, running)
    chosen = [s for s in sessions if subject is None or s.subject == subject]
    # QSIPrep reads every session of its subject: one failed conversion blocks them all
    broken = {s.subject for s in sessions if cells.get("bids_conversion", s).state == "failed"}
    rows = [cells.session(s, s.subject in broken) for s in chosen]
    return Board(
        generated_at=iso(utc_now()),
        sessions=rows,
        entries=[_open_entry(e) for e in entries.values()],
        failures_by_day=_failures_by_day(db),
    )


def _open_entries(db: DbSession) -> dict[str, DeadLetterEntry]:
    query = select(DeadLetterEntry).where(DeadLetterEntry.resolved.is_(False))
    return {entry.job_key: entry for entry in db.scalars(query)}


class _Cells:
    """The cells of sessions, from the layout, the open entries and the running markers."""

    def __init__(self, layout: Layout, entries: dict, running: dict):
        self.layout = layout
        self.entries = entries
        self.running = running
        self.listing = _Listing()

    def get(self, stage: str, s: Session, upstream_broken: bool = False) -> Cell:
        wildcards = {"subject": s.subject} if stage == "qsiprep" else s.wildcards
        key = job_key(STAGE_RULE[stage], wildcards)
        outputs = stage_outputs(self.layout, stage, s)
        return _cell(outputs, self.entries.get(key), self.running.get(key), upstream_broken,
                     self.listing)  # fmt: skip

    def session(self, s: Session, subject_broken: bool) -> SessionStatus:
        stages: dict[str, Cell] = {}
        broken = False
        for stage in STAGES:
            broken = broken or (stage == "qsiprep" and subject_broken)
            stages[stage] = self.get(stage, s, broken)
            broken = stages[stage].state in ("failed", "blocked")
        return SessionStatus(s.subject, s.session, stages)


def stage_outputs(layout: Layout, stage: str, s: Session) -> list[str]:
    """What this session's job of `stage` writes (QSIPrep: its report and this session's
    preprocessed DWI)."""
    if stage == "bids_conversion":
        return layout.bids_session_files(s.subject, s.session)
    if stage == "qsiprep":
        return [layout.qsiprep_report(s.subject), layout.qsiprep_preproc_dwi(s.subject, s.session)]
    if stage == "qsirecon":
        return layout.qsirecon_dsegs(s.subject, s.session) + layout.qsirecon_scalar_maps(
            s.subject, s.session
        )
    return layout.qsiparc_diffmaps(s.subject, s.session)


def _cell(
    outputs: list[str],
    entry: DeadLetterEntry | None,
    marker: dict | None,
    upstream_broken: bool,
    listing: _Listing,
) -> Cell:
    if outputs and listing.all_exist(outputs):
        return Cell("done", since=_written_at(outputs[-1]))
    if entry is not None:
        return Cell(
            "failed",
            since=iso(entry.failed_at),
            entry_id=entry.id,
            error_type=entry.error_type,
            evidence=entry.evidence,
        )
    if marker is not None:
        started = parse_iso(marker.get("started_at"))
        return Cell("running", since=iso(started), slurm_job_id=marker.get("slurm_job_id"))
    return Cell("blocked" if upstream_broken else "pending")


def _written_at(path: str) -> str | None:
    try:
        return iso(datetime.fromtimestamp(os.stat(path).st_mtime, UTC))
    except OSError:
        return None


def _open_entry(entry: DeadLetterEntry) -> OpenEntry:
    return OpenEntry(
        id=entry.id,
        pipeline=entry.pipeline_name,
        subject=entry.subject_id,
        session=entry.session_id,
        error_type=entry.error_type,
        evidence=entry.evidence,
        failed_at=iso(entry.failed_at),
    )


def _failures_by_day(db: DbSession) -> dict[tuple[str, str, str], int]:
    rows = db.execute(
        select(DeadLetterEntry.failed_at, DeadLetterEntry.pipeline_name, DeadLetterEntry.error_type)
    ).tuples()
    counts: Counter = Counter()
    for failed, pipeline, error_type in rows:
        moment = as_utc(failed)
        day = moment.date().isoformat() if moment is not None else "unknown"
        counts[(day, pipeline, error_type)] += 1
    return dict(counts)
