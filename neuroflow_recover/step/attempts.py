"""Per-attempt records and in-flight markers of the step runner (Snakemake never deletes them).

One JSON file per attempt:
``<workdir>/.neuroflow/attempts/<rule>/<wildcards key>/<UTC stamp>-attempt-<n>.json``.
Files are written atomically (temp file in the same directory, fsync, ``os.replace``) and
never deleted, so several invocations' records of the same job live side by side; the
record of "attempt n-1 of this invocation" is the NEWEST record with that attempt number.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from ..logsetup import get_logger
from ..times import parse_iso
from ..workflow.layout import wildcards_key

log = get_logger(__name__)

ATTEMPTS_DIR = Path(".neuroflow") / "attempts"
# <rule>/<wildcards key>.json while an attempt runs (removed when its record is written)
RUNNING_DIR = Path(".neuroflow") / "running"


@dataclass
class AttemptRecord:
    rule: str
    stage: str
    wildcards: dict[str, str]
    attempt: int
    started_at: str  # ISO 8601 UTC
    ended_at: str
    exit_code: int | None
    error_class: str | None  # None when the attempt succeeded
    retryable: bool | None
    resource: str | None
    pattern_id: str | None
    evidence: str | None
    resources: dict[str, int] = field(default_factory=dict)  # mem_mb, runtime, threads, disk_mb
    host: str = ""
    tail: list[str] = field(default_factory=list)  # last lines of the tool's output
    skipped: bool = False  # the tool was not started (earlier non-retryable cause, breaker)
    slurm_job_id: str | None = None
    log: str | None = None
    # skipped because attempt n-1 failed transiently and `neuroflow-recover run` re-runs
    # transient failures itself, after a backoff (env NEUROFLOW_DEFER_TRANSIENT=1)
    deferred: bool = False
    # what the tool used (step/usage.py; under SLURM the step's accounting when larger)
    peak_mem_mb: int | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None
    usage_source: str | None = None  # process-tree | sstat | sacct
    # the tool's work directory was kept from an earlier failed attempt (it may resume)
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttemptRecord":
        """Build a record from JSON, ignoring keys a newer writer may have added."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def succeeded(self) -> bool:
        return self.error_class is None and not self.skipped


def records_dir(workdir: str | os.PathLike, rule: str, wildcards: Any) -> Path:
    return Path(workdir) / ATTEMPTS_DIR / rule / wildcards_key(wildcards)


def _stamp(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso).astimezone(timezone.utc)
    except ValueError:
        moment = datetime.now(timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def write_record(workdir: str | os.PathLike, rec: AttemptRecord) -> Path:
    """Write one record atomically; returns its path. Never overwrites another record."""
    directory = records_dir(workdir, rec.rule, rec.wildcards)
    directory.mkdir(parents=True, exist_ok=True)
    base = f"{_stamp(rec.started_at)}-attempt-{rec.attempt}"
    data = json.dumps(rec.to_dict(), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        target = directory / f"{base}.json"
        n = 1
        while target.exists():  # same microsecond stamp (another writer): never replace it
            target = directory / f"{base}-{n}.json"
            n += 1
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort; not every FS supports it)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return target


def _sort_key(rec: AttemptRecord) -> tuple:
    moment = parse_iso(rec.started_at) or datetime.min.replace(tzinfo=timezone.utc)
    return (moment, rec.attempt)


def read_record(path: str | os.PathLike) -> AttemptRecord:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return AttemptRecord.from_dict(data)


def read_records(workdir: str | os.PathLike, rule: str, wildcards: Any) -> list[AttemptRecord]:
    """Every record of one job, oldest first (by start). Corrupt files are skipped with a warning."""
    directory = records_dir(workdir, rule, wildcards)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(read_record(path))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping unreadable attempt record", path=str(path), error=str(exc))
    records.sort(key=_sort_key)
    return records


def previous_record(
    workdir: str | os.PathLike, rule: str, wildcards: Any, attempt: int
) -> AttemptRecord | None:
    """The record of attempt ``attempt - 1`` (the newest one with that number), or None."""
    if attempt <= 1:
        return None
    wanted = [r for r in read_records(workdir, rule, wildcards) if r.attempt == attempt - 1]
    return wanted[-1] if wanted else None


def previous_chain(
    records: list[AttemptRecord], attempt: int
) -> list[AttemptRecord | None]:
    """The records of attempts 1 .. attempt-1 of the invocation that runs ``attempt``.

    Attempt k-1's record is the newest record numbered k-1 that started no later than the
    chosen record of attempt k (so an older invocation's records are not mixed in); None
    where an attempt left no record (e.g. killed with SIGKILL). ``records`` oldest first.
    """
    chain: list[AttemptRecord | None] = []
    limit: tuple | None = None
    for k in range(attempt - 1, 0, -1):
        found = None
        for rec in reversed(records):
            if rec.attempt == k and (limit is None or _sort_key(rec) <= limit):
                found = rec
                break
        chain.append(found)
        if found is not None:
            limit = _sort_key(found)
    chain.reverse()
    return chain


def mark_running(workdir: str | os.PathLike, rec: AttemptRecord) -> Path | None:
    """Say that an attempt has started (for `status`); None when it cannot be written."""
    path = Path(workdir) / RUNNING_DIR / rec.rule / f"{wildcards_key(rec.wildcards)}.json"
    data = {
        "rule": rec.rule,
        "wildcards": rec.wildcards,
        "attempt": rec.attempt,
        "started_at": rec.started_at,
        "host": rec.host,
        "pid": os.getpid(),
        "slurm_job_id": rec.slurm_job_id,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not mark the attempt as running", error=str(exc))
        return None
    return path


def clear_running(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def running_markers(workdir: str | os.PathLike) -> dict[str, dict]:
    """`<rule>/<wildcards key>` -> the marker of every attempt that says it is running.

    A marker outlives an attempt killed with SIGKILL: callers trust it only while a
    Snakemake run is in progress in the directory."""
    root = Path(workdir) / RUNNING_DIR
    found: dict[str, dict] = {}
    for path in root.glob("*/*.json"):
        try:
            found[f"{path.parent.name}/{path.stem}"] = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
    return found


def purge_records(workdir: str | os.PathLike, before: datetime, dry_run: bool = False) -> int:
    """Remove the records of jobs whose latest attempt succeeded and ended before `before`
    (a job that failed last keeps its history); returns how many jobs' records went."""
    removed = 0
    root = Path(workdir) / ATTEMPTS_DIR
    for directory in sorted(p for p in root.glob("*/*") if p.is_dir()):
        records = []
        for path in directory.glob("*.json"):
            try:
                records.append(read_record(path))
            except (OSError, ValueError, TypeError):
                continue
        if not records:
            continue
        latest = max(records, key=_sort_key)
        ended = parse_iso(latest.ended_at)
        if latest.succeeded and ended is not None and ended < before:
            removed += 1
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
    return removed
