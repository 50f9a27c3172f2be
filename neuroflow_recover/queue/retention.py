"""Retention: resolved entries and delivered notifications older than `retention_days` go.

Unresolved entries are never removed. Deletions run in small batches, each its own short
transaction, so a purge never blocks concurrent writers for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..step.attempts import purge_records
from ..times import utc_now
from .models import AttemptHistory, DeadLetterEntry, Delivery, Notification

BATCH = 500


@dataclass
class PurgeReport:
    older_than_days: int
    dry_run: bool
    entry_ids: list[int] = field(default_factory=list)
    notifications: int = 0
    attempt_jobs: int = 0  # jobs whose attempt records were removed

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def retention_days(cfg: dict | None) -> int:
    section = ((cfg or {}).get("error_handling") or {}).get("dead_letter") or {}
    return int(section.get("retention_days", 90))


def auto_cleanup(cfg: dict | None) -> bool:
    section = ((cfg or {}).get("error_handling") or {}).get("dead_letter") or {}
    return bool(section.get("auto_cleanup", True))


def purge(session: Session, workdir: Path, older_than_days: int, dry_run: bool = False) -> PurgeReport:
    """Remove (or, dry, list) what is older than the retention (`session` outside a
    transaction)."""
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
    report.notifications = len(notes)
    report.attempt_jobs = purge_records(workdir, cutoff, dry_run)
    if not dry_run:
        _delete_in_batches(session, report.entry_ids, _delete_entries)
        _delete_in_batches(session, notes, _delete_notifications)
    return report


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
