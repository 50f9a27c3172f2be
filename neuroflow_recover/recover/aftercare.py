"""What a command does after it wrote the queue: purge, announce breakers, notify.

`auto_cleanup` purges resolved entries older than the retention; circuit breakers that
opened on compute nodes are turned into notifications; pending notifications are
delivered. None of it may fail the command or a run: problems are warnings, and whatever
is left pending goes out with the next command or `neuroflow-recover notify`.
"""

from __future__ import annotations

from pathlib import Path

from ..logsetup import get_logger
from ..notify.deliver import Sent, deliver_pending
from ..queue.outbox import NotifySettings, configured_channels, enqueue_breaker
from ..queue.retention import auto_cleanup, layout_of, purge, retention_days
from ..step.breaker import announcements

log = get_logger(__name__)


def aftercare(db, workdir: Path, cfg: dict | None, command: str, *, ingested: bool) -> list[Sent]:
    """Purge (after an ingest, with auto_cleanup), announce breakers, deliver; never raises."""
    try:
        with db.sessions() as session:
            if ingested and auto_cleanup(cfg):
                purge(session, Path(workdir), retention_days(cfg), layout=layout_of(cfg))
            if not configured_channels(cfg):
                return []
            settings = NotifySettings.from_config(cfg, command)
            with session.begin():
                for item in announcements(workdir):
                    description = f"{item.get('signature', '')} ({item.get('jobs')} jobs)"
                    enqueue_breaker(session, item["key"], description, item.get("jobs", 0), settings)
            return deliver_pending(session, cfg)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never fail a command
        log.warning("after-run housekeeping failed (notifications stay pending)", error=str(exc))
        return []
