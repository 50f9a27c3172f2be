"""The workflow's end handlers (onsuccess/onerror): a plain `snakemake` feeds the queue.

The run's own main log is ingested as `ingest` would: failures dead-lettered, entries whose
job now succeeded resolved. It never changes the run's outcome: any problem is a warning,
and whatever is not ingested now is caught up by the next `neuroflow-recover` command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import environment
from ..logs.locations import LOG_SUFFIX
from ..logsetup import get_logger
from ..queue.database import open_database
from ..queue.ingest import IngestContext, ingest_log
from ..workflow.config import load_config
from ..workflow.invocation import Invocation
from .aftercare import aftercare

log = get_logger(__name__)


def ingest_own_log(
    logs: str | list[str] | None, configfiles: list[str] | tuple[str, ...] = (), workdir: str = "."
) -> None:
    """Ingest the main log of the run that is ending (never raises). `logs`: what Snakemake
    hands its handlers (the main log, or a list of the run's log files)."""
    main_log = _main_log(logs)
    if main_log is None or environment.flag(os.environ, environment.CALLER_INGESTS):
        return
    try:
        outcome = _ingest(main_log, list(configfiles), Path(workdir))
    except Exception as exc:  # noqa: BLE001 - the run's outcome is Snakemake's, never ours
        log.warning(
            "this run's failures were not recorded in the dead-letter queue; the next "
            "neuroflow-recover command (e.g. `neuroflow-recover list`) catches up",
            error=f"{type(exc).__name__}: {exc}",
        )
        return
    print(f"neuroflow: {outcome}", file=sys.stderr)


def _main_log(logs: str | list[str] | None) -> Path | None:
    candidates = [logs] if isinstance(logs, str) else list(logs or [])
    found = [Path(p) for p in candidates if str(p).endswith(LOG_SUFFIX)]
    return found[0] if found else None


def _ingest(main_log: Path, configfiles: list[str], workdir: Path) -> str:
    cfg = load_config(workdir, configfiles)
    invocation = Invocation.from_snakemake_argv(sys.argv[1:]).to_dict()
    db = open_database(os.environ.get(environment.DB), workdir)
    try:
        context = IngestContext.build(workdir, cfg, invocation)
        with db.sessions() as session, session.begin():
            result = ingest_log(session, context, main_log, run_ended=True)
        aftercare(db, workdir, cfg, context.notify.command, ingested=True)
    finally:
        db.dispose()
    entries = ", ".join(map(str, result.entry_ids)) or "none"
    resolved = ", ".join(map(str, result.resolved_ids)) or "none"
    return (
        f"dead-letter queue: {len(result.failures)} failed job(s) of this run; entries "
        f"{entries} (see `neuroflow-recover list`); resolved {resolved}"
    )
