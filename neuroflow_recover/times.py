"""Time conversions: neuroflow stores and compares aware UTC datetimes.

Two sources give naive times: the database (SQLite keeps no zone; neuroflow stores UTC, so
a naive value read back is UTC) and Snakemake's main log (local wall-clock time).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC with microseconds (attempt records)."""
    return utc_now().isoformat(timespec="microseconds")


def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as aware UTC: a naive value is UTC (the database gives them back naive)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def local_as_utc(value: datetime | None) -> datetime | None:
    """A time of Snakemake's log as aware UTC: a naive value is this machine's local time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(UTC)


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 text as aware UTC (naive = UTC), None when absent or malformed."""
    if not text:
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except (TypeError, ValueError):
        return None


def iso(value: datetime | None) -> str | None:
    """ISO 8601 of a stored time (naive = UTC), None for None."""
    moment = as_utc(value)
    return moment.isoformat() if moment is not None else None
