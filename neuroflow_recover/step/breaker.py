"""Circuit breaker: stop retrying a failure that many different jobs hit at the same time.

A failure's *signature* is its class, pattern id and evidence with digits, paths and hex
ids stripped, so "Connection refused to 10.0.0.7:5432" in sub-01 and sub-02 are the same.
Only classes whose retry repeats the same attempt count (``BREAKER_CLASSES``): a
ResourceError retry runs with more resources, and non-retryable classes are never retried.

State is plain files under ``<workdir>/.neuroflow/breaker/`` so it works across SLURM
jobs on a shared file system without a server:

* ``events/<sig>/<rule>--<wildcards key>`` one file per (signature, job), rewritten
  atomically (temp + rename) on every failure; its mtime is the failure time, so a job
  counts once however often it fails;
* ``<sig>.json`` the announcement, created with O_CREAT|O_EXCL by the one process that
  sees the breaker open first (it logs the warning; nobody else does). When the breaker
  has been closed for a window, the stale announcement is renamed away (only one process
  wins the rename) so a later opening is announced again.

The breaker for a signature is OPEN while at least ``threshold`` different jobs failed
with it within the last ``window_minutes``. It closes by itself when the failures age out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..logsetup import get_logger
from ..workflow.layout import wildcards_key

log = get_logger(__name__)

BREAKER_DIR = Path(".neuroflow") / "breaker"
BREAKER_CLASSES = frozenset({"TransientError", "RetryableError"})

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*/)+[\w.-]*")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]{8,}\b")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool = True
    threshold: int = 3
    window_minutes: float = 10.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "BreakerSettings":
        section = ((cfg or {}).get("error_handling") or {}).get("circuit_breaker") or {}
        default = cls()
        return cls(
            enabled=bool(section.get("enabled", default.enabled)),
            threshold=max(1, int(section.get("threshold", default.threshold))),
            window_minutes=float(section.get("window_minutes", default.window_minutes)),
        )


@dataclass(frozen=True)
class Signature:
    error_class: str
    pattern_id: str | None
    evidence: str  # normalised

    @property
    def key(self) -> str:
        text = f"{self.error_class}|{self.pattern_id or ''}|{self.evidence}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.error_class} ({self.pattern_id or 'no pattern'}): {self.evidence}"


@dataclass(frozen=True)
class BreakerState:
    signature: Signature
    open: bool
    jobs: int  # different jobs that failed with the signature within the window
    threshold: int
    window_minutes: float
    announced: bool = False  # this call created the announcement


def normalise_evidence(evidence: str | None) -> str:
    text = evidence or ""
    text = _PATH.sub("<path>", text)
    text = _HEX.sub("<hex>", text)
    text = _DIGITS.sub("#", text)
    return _SPACE.sub(" ", text).strip().lower()[:300]


def signature_of(error_class: str | None, pattern_id: str | None, evidence: str | None):
    """The breaker signature of a failure, or None when the breaker does not apply.

    It applies to BREAKER_CLASSES only, and only to failures with something specific to
    compare: a failure with neither a pattern nor an evidence line (an unknown exit code)
    says nothing about a shared cause.
    """
    if error_class not in BREAKER_CLASSES:
        return None
    if not pattern_id and not normalise_evidence(evidence):
        return None
    return Signature(error_class, pattern_id, normalise_evidence(evidence))


class CircuitBreaker:
    def __init__(self, workdir: str | os.PathLike, settings: BreakerSettings):
        self.root = Path(workdir) / BREAKER_DIR
        self.settings = settings

    # -- state ---------------------------------------------------------------------------
    def _events(self, sig: Signature) -> Path:
        return self.root / "events" / sig.key

    def recent_jobs(self, sig: Signature, now: float | None = None) -> int:
        now = time.time() if now is None else now
        horizon = now - self.settings.window_minutes * 60
        count = 0
        try:
            with os.scandir(self._events(sig)) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.stat().st_mtime >= horizon:
                            count += 1
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return 0
        return count

    def state(self, sig: Signature, now: float | None = None) -> BreakerState:
        jobs = self.recent_jobs(sig, now) if self.settings.enabled else 0
        return BreakerState(
            sig, self.settings.enabled and jobs >= self.settings.threshold, jobs,
            self.settings.threshold, self.settings.window_minutes,
        )

    # -- updates -------------------------------------------------------------------------
    def record_failure(self, sig: Signature, rule: str, wildcards: Any) -> BreakerState:
        """Count one job's failure; announce (once) if the breaker opens now."""
        if not self.settings.enabled:
            return self.state(sig)
        events = self._events(sig)
        events.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"signature": sig.describe(), "rule": rule, "wildcards": dict(wildcards or {}),
             "at": time.time()}
        )
        fd, tmp = tempfile.mkstemp(prefix=".", dir=events)
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, events / f"{rule}--{wildcards_key(wildcards)}")
        state = self.state(sig)
        if state.open and self._announce(state):
            log.warning(
                "circuit breaker open: retries of jobs that failed like this will not start",
                signature=sig.describe(), jobs=state.jobs,
                window_minutes=self.settings.window_minutes,
                announcement=str(self.root / f"{sig.key}.json"),
            )
            return BreakerState(**{**state.__dict__, "announced": True})
        if state.open:  # keep the announcement fresh while the breaker stays open
            try:
                os.utime(self.root / f"{sig.key}.json")
            except FileNotFoundError:
                pass
        return state

    def _announce(self, state: BreakerState) -> bool:
        """Create the announcement file; True only for the one process that creates it."""
        path = self.root / f"{state.signature.key}.json"
        body = json.dumps(
            {"signature": state.signature.describe(), "error_class": state.signature.error_class,
             "pattern_id": state.signature.pattern_id, "opened_at": time.time(),
             "jobs": state.jobs, "threshold": state.threshold,
             "window_minutes": state.window_minutes},
            indent=2,
        )
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._retire_if_stale(path):
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            return True
        return False

    def _retire_if_stale(self, path: Path) -> bool:
        """An announcement older than the window belongs to an earlier opening: move it away."""
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if age < self.settings.window_minutes * 60:
            return False
        try:
            os.rename(path, path.with_name(f"{path.stem}.{int(path.stat().st_mtime)}.closed"))
        except FileNotFoundError:
            pass  # another process retired it first
        return True


def announcements(workdir: str | os.PathLike) -> list[dict]:
    """The breakers that opened and were announced (`<sig>.json`), newest state each: what
    a login-node process turns into notifications (compute nodes may reach no server)."""
    found = []
    for path in sorted((Path(workdir) / BREAKER_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            data["key"] = f"breaker:{path.stem}:{int(float(data.get('opened_at') or 0))}"
            found.append(data)
    return found
