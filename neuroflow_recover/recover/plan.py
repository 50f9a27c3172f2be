"""The daily run's plan: which subjects need work, found without Snakemake's DAG.

A full plan asks Snakemake for every session. When nothing that decides what Snakemake
would run has changed since the last run (neuroflow and Snakemake versions, the workflow's
files, the configuration apart from error handling, the sheet's existing rows, re-run
triggers limited to `mtime` and `input`, no incomplete outputs), neuroflow replicates
Snakemake's decision per subject instead: a subject has work when it has a new session, a
declared output is missing, or an output is older than an input it is not `ancient` about.
Snakemake then gets a sheet of those subjects only (all their sessions: QSIPrep is per
subject), through `environment.PLAN_SHEET`, and plans exactly the jobs a full plan would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..workflow.layout import Layout
from ..workflow.sheet import COLUMNS, Session, sessions_by_subject

STATE = Path(".neuroflow") / "plan" / "state.json"
SUBSET = Path(".neuroflow") / "plan" / "sessions.tsv"
INCOMPLETE = Path(".snakemake") / "incomplete"
REPLICABLE_TRIGGERS = {"mtime", "input"}
STAT_THREADS = 32
SUBJECTS_PER_TASK = 256
# a chunk's stats on a warm cache take ~30 ms (~7,000 files), ~0.5 s on a cold one
SLOW_CHUNK_SECONDS = 0.2
# options that change which jobs Snakemake selects: with them, Snakemake plans in full
SELECTING_OPTIONS = (
    "-R", "--forcerun", "-F", "--forceall", "-f", "--force", "--until", "-U",
    "--omit-from", "-O", "--allowed-rules", "--list-changes",
    "--touch", "-t", "--batch",
)  # fmt: skip


@dataclass
class Plan:
    full: bool
    reason: str  # why in full, or what is pending
    subjects: list[str] = field(default_factory=list)  # with work (pending-only plans)
    sheet: Path | None = None  # the sheet of those subjects, for Snakemake

    def to_dict(self) -> dict:
        return {"full": self.full, "reason": self.reason, "subjects": len(self.subjects)}


def fingerprint(cfg: dict, snakefile_dir: Path) -> dict:
    """What decides the jobs besides the sheet and the files: versions, workflow, config."""
    import snakemake

    decisive = {k: v for k, v in cfg.items() if k not in ("sessions", "error_handling")}
    return {
        "neuroflow": __version__,
        "snakemake": snakemake.__version__,
        "workflow": _tree_hash(snakefile_dir),
        "config": _hash(json.dumps(decisive, sort_keys=True, default=str)),
    }


def make_plan(
    workdir: Path,
    cfg: dict,
    sessions: list[Session],
    snakefile_dir: Path,
    options: list[str],
    triggers: set[str] | None,
) -> Plan:
    """A full plan with its reason, or the subjects that need work."""
    workdir = Path(workdir)
    state = _read_state(workdir)
    reason = _full_reason(workdir, state, cfg, sessions, snakefile_dir, options, triggers)
    if reason is not None:
        return Plan(True, reason)
    layout = Layout.from_config(cfg).within(workdir)
    subjects = sessions_by_subject(sessions)
    pending = _with_work(layout, subjects, state["sheet"])
    sheet = _write_subset(workdir, sessions, set(pending))
    return Plan(False, f"{len(pending)} of {len(subjects)} subjects have work", pending, sheet)


def record_state(workdir: Path, cfg: dict, sessions: list[Session], snakefile_dir: Path) -> None:
    """After Snakemake ran: what the outputs now correspond to."""
    path = Path(workdir) / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "fingerprint": fingerprint(cfg, snakefile_dir),
        "sheet": {f"{s.subject}/{s.session}": s.dicom_dir for s in sessions},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)


def effective_triggers(workdir: Path, options: list[str], profile: str | None) -> set[str] | None:
    """The re-run triggers Snakemake will use: --rerun-triggers, else what the workflow
    profile (profiles/default) or the --profile sets; None: Snakemake's default (all).
    Where two sources disagree, the union (the plan only gets more conservative)."""
    if "--rerun-triggers" in options:
        index = options.index("--rerun-triggers") + 1
        values = []
        while index < len(options) and not options[index].startswith("-"):
            values.append(options[index])
            index += 1
        return set(values)
    found: set[str] = set()
    for directory in (Path(workdir) / "profiles" / "default", profile):
        if directory is None:
            continue
        path = Path(directory) if Path(directory).is_absolute() else Path(workdir) / directory
        value = _profile_value(path / "config.yaml", "rerun-triggers")
        if value is not None:
            found |= set(value if isinstance(value, list) else [value])
    return found or None


def _profile_value(path: Path, key: str):
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def snakefile_dir(workdir: Path, options: list[str]) -> Path:
    """The directory of the Snakefile Snakemake will read (-s/--snakefile, else its search)."""
    for flag in ("-s", "--snakefile"):
        if flag in options and options.index(flag) + 1 < len(options):
            path = Path(options[options.index(flag) + 1])
            return (path if path.is_absolute() else Path(workdir) / path).parent
    for name in ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile"):
        if (Path(workdir) / name).is_file():
            return (Path(workdir) / name).parent
    return Path(workdir)


def _full_reason(workdir, state, cfg, sessions, snakefile_dir, options, triggers) -> str | None:
    """Why equivalence cannot be established cheaply (None: it can)."""
    selecting = [o for o in options if o.split("=", 1)[0] in SELECTING_OPTIONS]
    if selecting:
        return f"Snakemake options that select jobs: {' '.join(selecting)}"
    if triggers is None or not triggers <= REPLICABLE_TRIGGERS:
        shown = ", ".join(sorted(triggers)) if triggers else "all (Snakemake's default)"
        return f"re-run triggers {shown}: only mtime and input are replicated"
    if state is None:
        return "no earlier run recorded"
    changed = [k for k, v in fingerprint(cfg, snakefile_dir).items()
               if state["fingerprint"].get(k) != v]  # fmt: skip
    if changed:
        return f"changed since the last run: {', '.join(changed)}"
    now = {f"{s.subject}/{s.session}": s.dicom_dir for s in sessions}
    gone = [key for key, value in state["sheet"].items() if now.get(key, value) != value]
    removed = [key for key in state["sheet"] if key not in now]
    if gone or removed:
        return f"sheet rows changed or removed: {', '.join((gone + removed)[:3])}"
    if any((Path(workdir) / INCOMPLETE).glob("*")):
        return "outputs of an interrupted run are marked incomplete"
    if not Path(Layout.from_config(cfg).within(workdir).dataset_description).exists():
        return "bids/dataset_description.json is missing"
    return None


def _with_work(layout: Layout, subjects: dict[str, list[Session]], known: dict) -> list[str]:
    """The subjects with a new session or work for Snakemake, in sheet order.

    Chunk by chunk; once a chunk shows the file system answering slowly (a cold cache, a
    network file system), many threads state the rest: at 100,000 sessions with the caches
    dropped, 104 s serially, 24 s with 32 threads. On a warm cache the stats are CPU work,
    and threads fighting over the interpreter were up to 3x slower on a busy machine."""

    def with_work(chunk: list[tuple[str, list[Session]]]) -> list[str]:
        return [
            subject
            for subject, rows in chunk
            if any(f"{s.subject}/{s.session}" not in known for s in rows)
            or _needs_work(layout, subject, rows)
        ]

    items = list(subjects.items())
    chunks = [items[i : i + SUBJECTS_PER_TASK] for i in range(0, len(items), SUBJECTS_PER_TASK)]
    found: list[str] = []
    for index, chunk in enumerate(chunks):
        start = time.perf_counter()
        found += with_work(chunk)
        if time.perf_counter() - start >= SLOW_CHUNK_SECONDS:
            with ThreadPoolExecutor(STAT_THREADS) as pool:
                parts = pool.map(with_work, chunks[index + 1 :])
                return found + [subject for part in parts for subject in part]
    return found


def _needs_work(layout: Layout, subject: str, rows: list[Session]) -> bool:
    """Snakemake's decision for the subject's jobs: a declared output missing, or an output
    older than a non-ancient input (mtime trigger)."""
    bids = _span(p for s in rows for p in layout.bids_session_files(s.subject, s.session))
    report = _span((layout.qsiprep_report(subject),))
    if bids is None or report is None or report[0] < bids[1]:
        return True
    for s in rows:
        recon = _span(layout.qsirecon_dsegs(subject, s.session)
                      + layout.qsirecon_scalar_maps(subject, s.session))  # fmt: skip
        if recon is None or recon[0] < report[0]:
            return True
        parc = _span(layout.qsiparc_diffmaps(subject, s.session))
        if parc is None or parc[0] < recon[1]:
            return True
    return False


def _span(paths: Iterable[str]) -> tuple[float, float] | None:
    """(oldest, newest) mtime of the paths, or None when one is missing (or none given)."""
    oldest, newest = math.inf, -math.inf
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        if mtime < oldest:
            oldest = mtime
        if mtime > newest:
            newest = mtime
    return None if newest == -math.inf else (oldest, newest)


def _write_subset(workdir: Path, sessions: list[Session], subjects: set[str]) -> Path:
    path = Path(workdir) / SUBSET
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(COLUMNS)] + [
        f"{s.subject}\t{s.session}\t{s.dicom_dir}" for s in sessions if s.subject in subjects
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _read_state(workdir: Path) -> dict | None:
    try:
        state = json.loads((Path(workdir) / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "fingerprint" in state else None


def _tree_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
