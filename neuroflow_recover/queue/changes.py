"""What changed since a dead-letter entry last failed: its job's inputs and the configuration.

`retry ID` re-runs a NON-retryable entry (ValidationError, ConfigurationError,
NonRetryableError) without `--force` only when something the failed job depends on is newer
than the entry's last failure:

* the job's input files, as the main log's job block lists them (stored on the entry at
  ingest, `error_details["input"]`); a directory counts with the newest thing under it
  (a DICOM folder whose files were replaced);
* the configuration of the invocation that produced it: `config/config.yaml`, its
  `--configfile`s, the profile's `config.yaml`, and the sessions sheet.

"Newer" uses a file's mtime and its ctime (the inode change time), so a fix copied in with
preserved timestamps (`cp -p`, `rsync -a`) still counts. Snakemake's log times have whole
seconds: a failure logged at 15:02:11 happened before 15:02:12, which is the moment used
unless an attempt record ended later (records have microseconds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..times import as_utc
from ..workflow.config import DEFAULT_CONFIGFILE

PROFILE_FILES = ("config.yaml", "profile.yaml")
MAX_WALKED = 1_000_000  # entries looked at under one input directory


@dataclass(frozen=True)
class Change:
    """A file the entry depends on that is newer than its last failure."""

    kind: str  # input | config | sessions | profile
    path: str  # as given (relative to the workflow directory when it was relative)
    changed_at: datetime  # aware, UTC


def last_failure(entry: Any) -> datetime:
    """The moment after which a change counts: the entry's last failure (aware, UTC)."""
    failed = as_utc(entry.failed_at) or datetime.now(UTC)
    if failed.microsecond == 0:  # a main-log time: the second it happened in has not ended
        failed += timedelta(seconds=1)
    ended = [as_utc(row.ended_at) for row in (getattr(entry, "history", None) or [])]
    return max([failed, *(moment for moment in ended if moment is not None)])


def dependencies(entry: Any, workdir: Path, cfg: dict) -> Iterator[tuple[str, str, Path]]:
    """(kind, shown path, path on disk) of everything a retry of the entry depends on."""
    workdir = Path(workdir)
    details = entry.error_details or {}
    for name in details.get("input") or []:
        yield "input", str(name), _on_disk(str(name), workdir)
    invocation = entry.invocation or {}
    names = [DEFAULT_CONFIGFILE, *(invocation.get("configfiles") or [])]
    for name in dict.fromkeys(str(n) for n in names):
        yield "config", name, _on_disk(name, workdir)
    profile = invocation.get("profile")
    if profile:
        for name in PROFILE_FILES:
            shown = str(Path(profile) / name)
            yield "profile", shown, _on_disk(shown, workdir)
    sheet = cfg.get("sessions") if isinstance(cfg, dict) else None
    if sheet:
        yield "sessions", str(sheet), _on_disk(str(sheet), workdir)


def changes_since(
    entry: Any, workdir: Path, cfg: dict, *, first_only: bool = True
) -> list[Change]:
    """The dependencies of `entry` that changed after its last failure (see the module doc).

    Missing files are not changes (a deleted input cannot make a retry succeed).
    """
    since = last_failure(entry).timestamp()
    found: list[Change] = []
    for kind, shown, path in dependencies(entry, workdir, cfg):
        moment = newer_than(path, since)
        if moment is None:
            continue
        found.append(Change(kind, shown, datetime.fromtimestamp(moment, UTC)))
        if first_only:
            break
    return found


def newer_than(path: Path, since: float) -> float | None:
    """The time of a change to `path` (or under it, for a directory) after `since`, or None."""
    stamp = _stamp(path)
    if stamp is None:
        return None
    if stamp > since:
        return stamp
    if not path.is_dir():
        return None
    seen = 0
    for directory, subdirs, files in os.walk(path, onerror=lambda _error: None):
        for name in (*subdirs, *files):
            seen += 1
            if seen > MAX_WALKED:
                return None
            stamp = _stamp(Path(directory) / name)
            if stamp is not None and stamp > since:
                return stamp
    return None


def _stamp(path: Path) -> float | None:
    """Newest of mtime and ctime, of a symbolic link and of what it points to."""
    stamps = []
    for follow in (False, True):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        stamps += [st.st_mtime, st.st_ctime]
    return max(stamps) if stamps else None


def _on_disk(name: str, workdir: Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else workdir / path
