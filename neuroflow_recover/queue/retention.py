"""Retention: resolved entries and delivered notifications older than `retention_days` go.

Unresolved entries are never removed; the work directories of dead letters (resolved or
not) whose last failure is older than the retention are (a retry then starts afresh).
Deletions run in small batches, each its own short transaction, so a purge never blocks
concurrent writers for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ..step import workdir as work_dirs
from ..step.attempts import purge_records
from ..times import utc_now
from ..workflow.layout import Layout
from .models import AttemptHistory, DeadLetterEntry, Delivery, Notification

BATCH = 500


@dataclass
class PurgeReport:
    older_than_days: int
    dry_run: bool
    entry_ids: list[int] = field(default_factory=list)
    notifications: int = 0
    attempt_jobs: int = 0  # jobs whose attempt records were removed
    work_dirs: list[str] = field(default_factory=list)  # dead letters' work directories

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def retention_days(cfg: dict | None) -> int:
    section = ((cfg or {}).get("error_handling") or {}).get("dead_letter") or {}
    return int(section.get("retention_days", 90))


def layout_of(cfg: dict | None) -> Layout | None:
    """The workflow's paths (for work directories), None without a usable config."""
    try:
        return Layout.from_config(cfg) if cfg else None
    except (KeyError, TypeError, ValueError):
        return None


def auto_cleanup(cfg: dict | None) -> bool:
    section = ((cfg or {}).get("error_handling") or {}).get("dead_letter") or {}
    return bool(section.get("auto_cleanup", True))


def purge(
    session: Session,
    workdir: Path,
    older_than_days: int,
    dry_run: bool = False,
    layout: Layout | None = None,
) -> PurgeReport:
    """Remove (or, dry, list) what is older than the retention (`session` outside a
    transaction); with `layout`, also the work directories of old dead letters."""
    cutoff = utc_now() - timedelta(days=older_than_days)
    report = PurgeReport(older_than_days, dry_run)
    with session.begin():
        report.entry_ids = list(
            session.scalars(
                select(DeadLetterEntry.id)
                .where(DeadLetterEntry.resolved.is_(True), DeadLetterEntry.resolved_at < cutoff)
                .order_by(DeadLetterEntry.id)
            )
        )
        done = select(Notification.id).where(
            Notification.created_at < cutoff,
            ~Notification.deliveries.any(Delivery.status != "delivered"),
        )
        notes = list(session.scalars(done))
        old = select(DeadLetterEntry.rule, DeadLetterEntry.wildcards).where(
            or_(DeadLetterEntry.id.in_(report.entry_ids), DeadLetterEntry.failed_at < cutoff)
        )
        jobs = list(session.execute(old)) if layout is not None else []
    report.notifications = len(notes)
    report.work_dirs = _old_work_dirs(workdir, layout, jobs, dry_run)
    report.attempt_jobs = purge_records(workdir, cutoff, dry_run)
    if not dry_run:
        _delete_in_batches(session, report.entry_ids, _delete_entries)
        _delete_in_batches(session, notes, _delete_notifications)
    return report


def _old_work_dirs(workdir: Path, layout: Layout | None, jobs, dry_run: bool) -> list[str]:
    found = []
    for rule, wildcards in jobs:
        if layout is None or "subject" not in (wildcards or {}):
            continue
        path = layout.job_work(rule, wildcards)
        if path is None:
            continue
        target = Path(workdir) / path
        if target.exists() and (dry_run or work_dirs.remove(target)):
            found.append(path)
    return sorted(set(found))


def _delete_in_batches(session: Session, ids: list[int], remove) -> None:
    for start in range(0, len(ids), BATCH):
        with session.begin():
            remove(session, ids[start : start + BATCH])


def _delete_entries(session: Session, ids: list[int]) -> None:
    session.execute(delete(AttemptHistory).where(AttemptHistory.entry_id.in_(ids)))
    session.execute(delete(DeadLetterEntry).where(DeadLetterEntry.id.in_(ids)))


def _delete_notifications(session: Session, ids: list[int]) -> None:
    session.execute(delete(Delivery).where(Delivery.notification_id.in_(ids)))
    session.execute(delete(Notification).where(Notification.id.in_(ids)))
