"""What retrying costs: a seeded simulation of a batch of QSIPrep-like jobs.

Every job is run (and retried) until it finishes or is dead-lettered under four policies:

* blind-doubling  the seed's Celery-era approach: retry every failure, double memory,
                  runtime and disk each time (capped by the stage's max; threads kept);
* blind-config    neuroflow with ``error_handling.cause_aware: false`` (grow everything
                  by the configured factors);
* cause-aware-x2  the same with the blind policy's doubling factors (like-for-like: it
                  isolates what knowing the cause saves from the choice of factor);
* cause-aware     neuroflow's default: grow only what the failure was about, keep resources
                  after a transient failure, fail fast (no tool run) after a non-retryable
                  failure, and stop a failure that repeats where another attempt cannot
                  help (an unknown failure twice, a resource failure again at the cap).
                  The growth and the repeat rule are the real
                  ``neuroflow_recover.step.resources`` code (``cause_of``, ``grow``,
                  ``repeated_failure``, ``at_stage_cap`` on AttemptRecords), not a copy;
* no-repeat-rule  cause-aware without the repeat rule (what it saves is printed);
* oracle          a lower bound: knows every job's needs; gives each job max(base, need),
                  never runs a job that cannot succeed; transient failures still happen.

The cost is BILLED core-hours, SLURM-style: hours x max(threads, mem_mb / MEM_PER_CORE_MB)
(clusters bill memory beyond the per-core share like extra cores). Wall time spent waiting
in the queue is not counted.

Numbers used (sources; ASSUMPTION marks a number we could not source):

* base resources, growth factors, caps, attempts: this repository's config/config.yaml
  (qsiprep: 16000 MB, 720 min, 8 threads; growth 1.5; max 64000 MB / 2880 min;
  max_attempts 3);
* memory need: lognormal, median 10 GB, sigma 0.35 (about 9 % of jobs need more than the
  16 GB base). Anchors: the QSIPrep maintainer recommends at least 12 GB and warns 8 GB may
  not be enough (PennLINC/qsiprep#587); QSIPrep warns below 8 GB (PennLINC/qsiprep#484);
  single subjects reached ~50 GiB in 0.18.0 (PennLINC/qsiprep#598). The spread is an
  ASSUMPTION;
* extreme jobs: 0.5 % need 70-100 GB, more than the 64 GB cap (a 0.9 mm, 199-direction
  session failed with a 64 GB limit, PennLINC/qsiprep#692). The share is an ASSUMPTION;
* runtime need on 8 threads: lognormal, median 300 min, sigma 0.5 (about 4 % exceed the
  720 min base). ASSUMPTION: we found no published QSIPrep runtime distribution; the
  order of magnitude (hours per subject, more for many directions / eddy on CPU) matches
  user reports for the sibling fMRIPrep (nipreps/fmriprep#1147, #2414);
* transient failures (node failure, preemption, network / file-system hiccup): 3 % per
  attempt, at a uniformly random point of the run. ASSUMPTION;
* validation errors (missing / invalid BIDS input): 2 % of jobs, fail after 10 min;
  configuration errors (missing FreeSurfer license, bad image): 0.5 %, fail after 2 min.
  ASSUMPTION (both are checked at start-up, see docs/neuroimaging-tools-notes.md);
* deterministic data errors in the middle of the run (a pipeline node crashes on this
  subject's data every time, with the same message): 1 % of jobs, at 20-80 % of the run;
  half of them carry a message the classifier knows (NonRetryableError), the other half
  are unknown (RetryableError; issue 11 measured 4 of 23 held-out non-retryable failures
  classified as unknown). The share is an ASSUMPTION;
* memory failures happen at 10-60 % of the run (peak in N4 / eddy); a time limit costs the
  whole limit;
* the classifier names the cause of a resource failure correctly 95 % of the time; the
  rest is RetryableError, which cause-aware treats as unknown (grows memory and runtime).
  ASSUMPTION;
* MEM_PER_CORE_MB = 4000 (a typical 4 GB/core node). ASSUMPTION.

Run: ``python benchmarks/recovery_cost.py [--jobs N] [--seed S] [--mem-per-core-mb M]``.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from neuroflow_recover.step.attempts import AttemptRecord
from neuroflow_recover.step.resources import (
    MEMORY,
    RESOURCE_KEYS,
    RUNTIME,
    UNKNOWN,
    at_stage_cap,
    cause_of,
    grow,
    repeated_failure,
    stage_settings,
)

REPO = Path(__file__).resolve().parents[1]
STAGE = "qsiprep"
MEM_PER_CORE_MB = 4000
P_TRANSIENT = 0.03
P_VALIDATION = 0.02
P_CONFIGURATION = 0.005
P_DATA_CRASH = 0.01
P_EXTREME = 0.005
P_CAUSE_NAMED = 0.95
P_CRASH_NAMED = 0.5
SKIP_SECONDS = 2  # a fail-fast attempt: the step runner exits without starting the tool


@dataclass
class Job:
    mem_mb: int
    runtime_min: float
    fatal: str | None  # ValidationError / ConfigurationError / NonRetryableError, or None
    draws: list[tuple[float, float, float]]  # per attempt: transient?, when, classifier


@dataclass
class Outcome:
    core_hours: float = 0.0
    wasted: float = 0.0  # core-hours of attempts that failed
    attempts: int = 0  # Snakemake attempts (a fail-fast attempt takes seconds)
    tool_runs: int = 0  # attempts that started the tool
    finished: int = 0
    dead: int = 0


def make_jobs(n: int, seed: int, attempts: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        if rng.random() < P_EXTREME:
            mem = rng.uniform(70000, 100000)
        else:
            mem = 10000 * math.exp(rng.gauss(0, 0.35))
        runtime = 300 * math.exp(rng.gauss(0, 0.5))
        roll = rng.random()
        fatal = (
            "ValidationError" if roll < P_VALIDATION
            else "ConfigurationError" if roll < P_VALIDATION + P_CONFIGURATION
            else "NonRetryableError" if roll < P_VALIDATION + P_CONFIGURATION + P_DATA_CRASH
            else None
        )
        draws = [(rng.random(), rng.random(), rng.random()) for _ in range(attempts)]
        jobs.append(Job(int(mem), runtime, fatal, draws))
    return jobs


def billed(hours: float, res: dict[str, int]) -> float:
    return hours * max(res["threads"], res["mem_mb"] / MEM_PER_CORE_MB)


def attempt_outcome(job: Job, res: dict[str, int], k: int) -> tuple[str | None, float]:
    """(failure cause or None for success, hours used) of attempt k with resources res."""
    transient, when, _ = job.draws[k]
    if job.fatal == "ConfigurationError":
        return "ConfigurationError", 2 / 60
    if job.fatal == "ValidationError":
        return "ValidationError", 10 / 60
    full = job.runtime_min
    if job.fatal == "NonRetryableError" and job.mem_mb <= res["mem_mb"]:
        return "NonRetryableError", (0.2 + 0.6 * when) * min(full, res["runtime"]) / 60
    if job.mem_mb > res["mem_mb"]:  # memory peaks at 10-60 % of the run
        return MEMORY, (0.1 + 0.5 * when) * min(full, res["runtime"]) / 60
    if transient < P_TRANSIENT:
        return "TransientError", when * min(full, res["runtime"]) / 60
    if full > res["runtime"]:
        return RUNTIME, res["runtime"] / 60
    return None, full / 60


EVIDENCE = {  # what each failure prints (the same each time: the repeat rule compares it)
    MEMORY: "MemoryError", RUNTIME: "DUE TO TIME LIMIT", "TransientError": "Connection reset",
    "ValidationError": "No T1w images found", "ConfigurationError": "license not found",
    "NonRetryableError": "Segmentation fault in node eddy",
}


def record_for(cause: str, named: bool, attempt: int, res: dict[str, int]) -> AttemptRecord:
    """The attempt record the step runner would have written for this failure."""
    if cause in (MEMORY, RUNTIME, "NonRetryableError"):
        error_class, resource = ("ResourceError", cause) if cause != "NonRetryableError" else (cause, None)
        if not named:  # the classifier missed the cause: unknown
            error_class, resource = "RetryableError", None
    else:
        error_class, resource = cause, None
    return AttemptRecord(
        rule="qsiprep_preprocess", stage=STAGE, wildcards={}, attempt=attempt, started_at="",
        ended_at="", exit_code=3, error_class=error_class,
        retryable=error_class not in ("ValidationError", "ConfigurationError",
                                      "NonRetryableError"),
        resource=resource, pattern_id=None, evidence=EVIDENCE[cause], resources=dict(res),
    )


def checked(previous: AttemptRecord | None, record: AttemptRecord, cfg) -> AttemptRecord:
    """The record after the step runner's repeat rule (step/resources.py)."""
    cap = at_stage_cap(cfg, STAGE, record.resource, record.resources)
    if repeated_failure(previous, record, at_cap=cap is not None):
        record.error_class, record.resource, record.retryable = "NonRetryableError", None, False
    return record


CAUSE_AWARE = ("cause-aware", "cause-aware-x2", "no-repeat-rule")


def simulate(jobs, policy: str, cfg, max_attempts: int) -> Outcome:
    out = Outcome()
    base, growth, maximum = stage_settings(cfg, STAGE)
    doubling = {**{key: 2.0 for key in RESOURCE_KEYS}, "threads": 1.0}  # memory, time, disk
    for job in jobs:
        causes: list[str] = []  # cause per failed attempt, as resources.cause_of names them
        previous: AttemptRecord | None = None
        if policy == "oracle":
            if job.fatal or job.mem_mb > maximum["mem_mb"]:
                out.dead += 1
                continue
            res = dict(base)
            res["mem_mb"] = max(base["mem_mb"], job.mem_mb)
            res["runtime"] = max(base["runtime"], math.ceil(job.runtime_min))
        for k in range(max_attempts):
            if policy == "blind-doubling":
                res = grow(base, doubling, maximum, [UNKNOWN] * k, cause_aware=False)
            elif policy == "blind-config":
                res = grow(base, growth, maximum, [UNKNOWN] * k, cause_aware=False)
            elif policy in CAUSE_AWARE:
                if causes and causes[-1] == "final":  # fail fast: the tool is not started
                    out.core_hours += billed(SKIP_SECONDS / 3600, res)
                    out.attempts += 1
                    continue
                factors = doubling if policy == "cause-aware-x2" else growth
                res = grow(base, factors, maximum, causes)
            cause, hours = attempt_outcome(job, res, k)
            cost = billed(hours, res)
            out.core_hours += cost
            out.attempts += 1
            out.tool_runs += 1
            if cause is None:
                out.finished += 1
                break
            out.wasted += cost
            # a crash prints the same message every time: known or not, for all attempts
            named = (job.draws[0][2] < P_CRASH_NAMED if cause == "NonRetryableError"
                     else job.draws[k][2] < P_CAUSE_NAMED)
            record = record_for(cause, named, k + 1, res)
            if policy != "no-repeat-rule":
                record = checked(previous, record, cfg)
            causes.append(cause_of(record))
            previous = record
        else:
            out.dead += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--mem-per-core-mb", type=int, default=MEM_PER_CORE_MB,
                        help="billing: memory that counts as one core (sensitivity)")
    args = parser.parse_args()
    globals()["MEM_PER_CORE_MB"] = args.mem_per_core_mb

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base, growth, maximum = stage_settings(cfg, STAGE)
    eh = cfg["error_handling"]
    max_attempts = int(
        (eh.get("pipelines", {}).get(STAGE) or {}).get(
            "max_attempts", eh["default_retry"]["max_attempts"])
    )
    jobs = make_jobs(args.jobs, args.seed, max_attempts)
    need_mem = sum(j.mem_mb > base["mem_mb"] for j in jobs) / len(jobs)
    need_time = sum(j.runtime_min > base["runtime"] for j in jobs) / len(jobs)
    print(f"{len(jobs)} {STAGE} jobs, seed {args.seed}, max_attempts {max_attempts}, "
          f"base {base}, growth {growth}, max {maximum}")
    print(f"jobs over base memory {need_mem:.1%}, over base runtime {need_time:.1%}, "
          f"over the memory cap {P_EXTREME:.1%}; transient {P_TRANSIENT:.0%}/attempt, "
          f"validation {P_VALIDATION:.1%}, configuration {P_CONFIGURATION:.1%}, "
          f"mid-run data crash {P_DATA_CRASH:.1%}; billing max(threads, mem/{MEM_PER_CORE_MB} MB)")
    print()
    policies = ("blind-doubling", "blind-config", "cause-aware", "cause-aware-x2", "no-repeat-rule",
                "oracle")
    results = {policy: simulate(jobs, policy, cfg, max_attempts) for policy in policies}
    header = (f"{'policy':<15} {'core-hours':>12} {'wasted':>10} {'attempts':>9} "
              f"{'tool runs':>9} {'finished':>9} {'dead-letter':>11}")
    print(header)
    print("-" * len(header))
    for policy, r in results.items():
        print(f"{policy:<15} {r.core_hours:>12,.0f} {r.wasted:>10,.0f} {r.attempts:>9} "
              f"{r.tool_runs:>9} {r.finished:>9} {r.dead:>11}")
    print()
    x2 = results["cause-aware-x2"].core_hours / results["blind-doubling"].core_hours
    cfg_ratio = results["cause-aware"].core_hours / results["blind-config"].core_hours
    print(f"like for like: cause-aware-x2/blind-doubling={x2:.3f} "
          f"cause-aware/blind-config={cfg_ratio:.3f}")
    ca = results["cause-aware"].core_hours
    print(f"cause_aware/blind={ca / results['blind-doubling'].core_hours:.3f} "
          f"cause_aware/oracle={ca / results['oracle'].core_hours:.3f}")
    before, after = results["no-repeat-rule"], results["cause-aware"]
    print(f"repeat rule (same failure on attempts N and N+1 -> NonRetryableError): "
          f"{before.tool_runs - after.tool_runs} tool runs saved "
          f"({before.tool_runs} -> {after.tool_runs}), "
          f"{before.core_hours - after.core_hours:,.0f} core-hours saved "
          f"(cause-aware/no-repeat-rule={after.core_hours / before.core_hours:.3f}), "
          f"finished {before.finished} -> {after.finished}")


if __name__ == "__main__":
    main()
