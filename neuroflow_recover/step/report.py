"""Requested vs used over a whole study, per rule (``neuroflow-recover resources``).

Every attempt record (what was requested, what the tool used, how it ended), the attempts
that left no record but a SLURM job log (killed with the step runner, e.g. by SLURM's
memory enforcement), and SLURM's accounting of all of them when ``sacct`` answers (MaxRSS
is what SLURM enforces: the job's own processes included). Per rule: p50 / p95 / max of
memory and runtime, CPU efficiency, failures by cause, and the request the stage's history
suggests (``step/learning.py``; the same rule the next plan applies).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..classify.classifier import classifier_for
from ..errors import ConfigError
from ..files import read_tail
from ..logs.locations import SLURM_LOGDIR
from ..workflow.layout import RULE_STAGE, job_key
from .accounting import JobAccounting, sacct_jobs
from .attempts import ATTEMPTS_DIR, AttemptRecord, read_record
from .learning import LearnSettings, learned_request, quantile, read_samples
from .resource_plan import stage_floor
from .resources import SLURM_TAIL_BYTES, cause_of, cause_of_classification, stage_settings

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
WILDCARD_ORDER = ("subject", "session")  # as the workflow's output patterns name them


@dataclass
class AttemptUsage:
    """One attempt as the report sees it."""

    rule: str
    job: str
    outcome: str  # succeeded | failed | skipped
    cause: str | None  # step.resources CAUSES for a failure
    requested: dict[str, int]
    peak_mem_mb: int | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None
    usage_source: str | None = None
    slurm_job_id: str | None = None


@dataclass
class Spread:
    p50: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Spread":
        found = [float(v) for v in values if v is not None]
        if not found:
            return cls()
        return cls(quantile(found, 0.5), quantile(found, 0.95), max(found))


@dataclass
class RuleUsage:
    rule: str
    stage: str
    jobs: int
    attempts: int
    succeeded: int
    requested_mem_mb: Spread
    used_mem_mb: Spread
    requested_runtime_min: Spread
    used_runtime_min: Spread
    cpu_efficiency: Spread
    failures: dict[str, int] = field(default_factory=dict)
    history: int = 0  # successful jobs in the stage's usage summary
    min_history: int = 0
    suggested: dict[str, int] | None = None  # what the history suggests (even below min_history)
    learned: bool = False  # the next plan uses the suggestion (history >= min_history)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _records(workdir: Path) -> list[AttemptRecord]:
    found = []
    for path in sorted((workdir / ATTEMPTS_DIR).glob("*/*/*.json")):
        try:
            found.append(read_record(path))
        except (OSError, ValueError, TypeError):
            continue
    return found


def _plugin_dir(wildcards: Mapping[str, str]) -> str:
    """The plugin's name of a job's log directory: the wildcard values in the rules' order
    (subject, then session), joined by ``_`` (records keep them sorted by name)."""
    order = sorted(wildcards, key=lambda k: (WILDCARD_ORDER.index(k) if k in WILDCARD_ORDER else 9, k))
    return "_".join(str(wildcards[k]) for k in order)


def _from_record(rec: AttemptRecord) -> AttemptUsage:
    outcome = SKIPPED if rec.skipped else SUCCEEDED if rec.succeeded else FAILED
    return AttemptUsage(
        rule=rec.rule, job=job_key(rec.rule, rec.wildcards), outcome=outcome,
        cause=cause_of(rec) if outcome == FAILED else None, requested=dict(rec.resources),
        peak_mem_mb=rec.peak_mem_mb, elapsed_s=rec.elapsed_s, cpu_s=rec.cpu_s,
        usage_source=rec.usage_source, slurm_job_id=rec.slurm_job_id,
    )  # fmt: skip


def _slurm_only(
    workdir: Path, rules: Iterable[str], records: list[AttemptRecord], cfg
) -> list[AttemptUsage]:
    """Attempts with a SLURM job log but no record: the plugin keeps only failed jobs' logs
    (in ``rule_<rule>/<wildcard values joined by _>/<job id>.log``)."""
    known = {rec.slurm_job_id for rec in records if rec.slurm_job_id}
    jobs = {  # the plugin's directory name of a job -> its job key
        (rec.rule, _plugin_dir(rec.wildcards)): job_key(rec.rule, rec.wildcards)
        for rec in records
    }
    found = []
    classifier = None
    for rule in rules:
        for path in sorted((workdir / SLURM_LOGDIR / f"rule_{rule}").glob("*/*.log")):
            job_id = path.stem
            if job_id in known or not job_id.isdigit():
                continue
            try:
                text, _ = read_tail(path, SLURM_TAIL_BYTES)
            except OSError:
                continue
            classifier = classifier or classifier_for(cfg)
            cause = cause_of_classification(classifier.classify(text))
            job = jobs.get((rule, path.parent.name), f"{rule}/{path.parent.name}")
            found.append(AttemptUsage(rule, job, FAILED, cause, {}, slurm_job_id=job_id))
    return found


def _with_accounting(item: AttemptUsage, acct: JobAccounting | None) -> None:
    """SLURM's view where it knows more: what was allocated, the step's MaxRSS."""
    if acct is None:
        return
    if not item.requested:
        item.requested = {
            key: value for key, value in (
                ("mem_mb", acct.req_mem_mb), ("runtime", acct.timelimit_min),
                ("threads", acct.alloc_cpus),
            ) if value is not None
        }  # fmt: skip
    if acct.max_rss_mb is not None and acct.max_rss_mb > (item.peak_mem_mb or 0):
        item.peak_mem_mb, item.usage_source = acct.max_rss_mb, "sacct"
    if item.elapsed_s is None and acct.elapsed_s is not None:
        item.elapsed_s, item.cpu_s = acct.elapsed_s, acct.cpu_s
        item.usage_source = item.usage_source or "sacct"


def collect_attempts(
    workdir: Path,
    cfg: Mapping[str, Any] | None,
    use_sacct: bool = True,
    sacct: Callable[[Iterable[str]], dict[str, JobAccounting]] = sacct_jobs,
) -> list[AttemptUsage]:
    """Every attempt of the study: records, SLURM-log-only attempts, with SLURM accounting."""
    records = _records(workdir)
    attempts = [_from_record(rec) for rec in records]
    rules = sorted({rec.rule for rec in records} | set(RULE_STAGE))
    attempts += _slurm_only(workdir, rules, records, cfg)
    ids = [a.slurm_job_id for a in attempts if a.slurm_job_id]
    accounting = sacct(ids) if use_sacct and ids else {}
    for item in attempts:
        _with_accounting(item, accounting.get(item.slurm_job_id or ""))
    return attempts


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _efficiency(item: AttemptUsage) -> float | None:
    threads = item.requested.get("threads")
    if not item.cpu_s or not item.elapsed_s or not threads:
        return None
    return item.cpu_s / (item.elapsed_s * threads)


def summarize(
    attempts: list[AttemptUsage], cfg: Mapping[str, Any] | None, workdir: Path
) -> list[RuleUsage]:
    """One row per rule (rules of the workflow first, in pipeline order)."""
    order = list(RULE_STAGE)
    rules = sorted(
        {a.rule for a in attempts}, key=lambda r: (order.index(r) if r in order else len(order), r)
    )
    out = []
    for rule in rules:
        mine = [a for a in attempts if a.rule == rule]
        ran = [a for a in mine if a.outcome != SKIPPED]
        done = [a for a in mine if a.outcome == SUCCEEDED]
        failures: dict[str, int] = {}
        for item in mine:
            if item.outcome == FAILED and item.cause:
                failures[item.cause] = failures.get(item.cause, 0) + 1
        row = RuleUsage(
            rule=rule, stage=RULE_STAGE.get(rule, rule), jobs=len({a.job for a in mine}),
            attempts=len(ran), succeeded=len({a.job for a in done}),
            requested_mem_mb=Spread.of(a.requested.get("mem_mb") for a in ran),
            used_mem_mb=Spread.of(a.peak_mem_mb for a in done),
            requested_runtime_min=Spread.of(a.requested.get("runtime") for a in ran),
            used_runtime_min=Spread.of(_minutes(a.elapsed_s) for a in done),
            cpu_efficiency=Spread.of(_efficiency(a) for a in done),
            failures=dict(sorted(failures.items())),
        )  # fmt: skip
        _suggest(row, cfg, workdir)
        out.append(row)
    return out


def _suggest(row: RuleUsage, cfg: Mapping[str, Any] | None, workdir: Path) -> None:
    """The stage's learned request (from its usage summary, like the next plan)."""
    if not cfg or row.rule not in RULE_STAGE:
        return
    try:
        base, _, maximum = stage_settings(cfg, row.stage)
    except ConfigError:
        return
    settings = LearnSettings.from_config(cfg, row.stage)
    samples = read_samples(workdir, row.stage)
    usable = [s for s in samples if s.threads == base["threads"]]
    row.history, row.min_history = len(usable), settings.min_history
    relaxed = LearnSettings(**{**asdict(settings), "enabled": True, "min_history": 1})
    floor = stage_floor(cfg, row.stage, base)
    row.suggested = learned_request(usable, relaxed, base["threads"], floor, maximum)
    row.learned = settings.enabled and len(usable) >= settings.min_history


def usage_report(
    workdir: str | os.PathLike, cfg: Mapping[str, Any] | None, use_sacct: bool = True
) -> list[RuleUsage]:
    """The report of ``neuroflow-recover resources``."""
    workdir = Path(workdir)
    return summarize(collect_attempts(workdir, cfg, use_sacct), cfg, workdir)
