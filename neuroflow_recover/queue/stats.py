"""Queue statistics: totals and unresolved counts, overall and per pipeline, class, subject."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from .models import DeadLetterEntry

STAT_GROUPS = (
    ("pipeline", DeadLetterEntry.pipeline_name),
    ("error_type", DeadLetterEntry.error_type),
    ("subject", DeadLetterEntry.subject_id),
)


def queue_stats(session: Session) -> dict:
    """Totals, unresolved, and both per pipeline, error class and subject."""
    unresolved = func.sum(case((DeadLetterEntry.resolved.is_(False), 1), else_=0))
    total, open_count = session.execute(select(func.count(DeadLetterEntry.id), unresolved)).one()
    stats: dict = {"total": total or 0, "unresolved": open_count or 0}
    stats["resolved"] = stats["total"] - stats["unresolved"]
    for name, column in STAT_GROUPS:
        rows = session.execute(
            select(column, func.count(), unresolved).group_by(column).order_by(column)
        ).all()
        stats[f"by_{name}"] = {
            (key if key is not None else "-"): {"total": count, "unresolved": opened or 0}
            for key, count, opened in rows
        }
    return stats


def stats_frame(stats: dict):
    """Long form (a pandas DataFrame): one row per (group, key), total and unresolved counts."""
    import pandas as pd

    rows = [
        {"group": "all", "key": "all", "total": stats["total"], "unresolved": stats["unresolved"]}
    ]
    for name, _ in STAT_GROUPS:
        for key, counts in stats[f"by_{name}"].items():
            rows.append({"group": name, "key": key, **counts})
    return pd.DataFrame(rows, columns=["group", "key", "total", "unresolved"])
