"""The tool's work directory across attempts: kept where the tool can resume, else fresh.

BIDS Apps built on nipype (QSIPrep, QSIRecon) cache every finished node in their work
directory, so a retry that finds it skips what was done. The step runner keeps it when the
last attempt that ran the tool failed for memory, runtime, disk or a transient cause, or
left no record (killed with the step runner, e.g. by SLURM's memory enforcement); it
removes it before an attempt after any other failure (a retry must not inherit what may
have caused it) and after a success. ``purge`` removes those of old dead letters.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..logsetup import get_logger
from .attempts import AttemptRecord
from .resources import DISK, MEMORY, RUNTIME, TRANSIENT, cause_of

log = get_logger(__name__)

RESUMABLE = (MEMORY, RUNTIME, DISK, TRANSIENT)


def has_content(work: Path) -> bool:
    try:
        return any(work.iterdir())
    except OSError:
        return False


def keep_reason(last_ran: AttemptRecord | None) -> str | None:
    """Why an existing work directory may be resumed after ``last_ran`` (the newest record
    that ran the tool), or None when it must be removed."""
    if last_ran is None:
        return "no earlier attempt left a record"
    if last_ran.succeeded:
        return f"attempt {last_ran.attempt} succeeded; a later attempt left it and no record"
    cause = cause_of(last_ran)
    if cause in RESUMABLE:
        return f"attempt {last_ran.attempt} stopped for {cause}"
    return None


def prepare(work: Path, last_ran: AttemptRecord | None) -> tuple[bool, str | None]:
    """Make ``work`` ready for an attempt: (resumed, why) when an earlier one's content is
    kept, (False, why) when it was removed, (False, None) when there was nothing."""
    if not has_content(work):
        work.mkdir(parents=True, exist_ok=True)
        return False, None
    why = keep_reason(last_ran)
    if why is not None:
        return True, why
    remove(work)
    work.mkdir(parents=True, exist_ok=True)
    cause = cause_of(last_ran)
    return False, f"attempt {last_ran.attempt} failed with {cause}: not resumable"


def remove(work: Path) -> bool:
    """Remove a work directory (True when it existed); a failure is logged, never raised."""
    if not work.exists():
        return False
    try:
        shutil.rmtree(work)
    except OSError as exc:
        log.warning("could not remove the work directory", work=str(work), error=str(exc))
        return False
    return True
