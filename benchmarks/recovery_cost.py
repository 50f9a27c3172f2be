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
* cause-aware+resume  cause-aware, and a retry keeps the tool's work directory: QSIPrep
                  (nipype) skips the nodes it finished (the ``resume`` effect below);
* learned         neuroflow with history: jobs are submitted in order and each first
                  attempt learns from the jobs that finished before it (the real
                  ``step.learning.learned_request`` on ``Sample``s, the config's
                  ``stages.qsiprep.learn`` and ``floor``), retries are cause-aware from
                  there, memory of a retry is raised to threads x the free share
                  (``billing.raise_memory: retries``, the real ``step.resource_plan.within_billing``
                  on a MAX_TRES ``BillingModel``), with resume;
* learned-no-resume  the same without resume (what resume adds);
* learned+free-share  ``raise_memory: first_attempt``: every attempt gets the free share
                  (here 32 GB for 8 threads): fewest failures, but see reserved memory;
* oracle          a lower bound: knows every job's needs; gives each job max(base, need),
                  never runs a job that cannot succeed; transient failures still happen;
* oracle+resume   the same with resume (its transient failures cost only the node lost).

The cost is BILLED core-hours, SLURM-style: hours x max(threads, mem_mb / MEM_PER_CORE_MB)
(clusters bill memory beyond the per-core share like extra cores). Wall time spent waiting
in the queue is not counted. WASTED core-hours are what bought no result: failed attempts,
minus the finished nodes a resumed retry reused, plus the resume overhead (every attempt of
a job that never finishes is wasted). RESERVED memory-hours (requested GB x elapsed hours
of every attempt) show what "request everything" costs the other users of a node even when
the billing does not charge it.

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
* MEM_PER_CORE_MB = 4000 (a typical 4 GB/core node). ASSUMPTION;
* resume: a retry that keeps the work directory loses only the node that was running when
  the attempt failed: a uniform share of 0-NODE_SHARE of the job's work, NODE_SHARE = 0.25
  (the longest QSIPrep nodes, eddy and the registrations, take hours on CPU). ASSUMPTION;
  a resumed attempt spends RESUME_OVERHEAD_MIN = 5 minutes re-checking the cached nodes and
  starting the container. ASSUMPTION. Memory and data-crash failures happen at the same
  node every time (the memory peak in eddy, the crashing node), so a resumed retry gets
  there sooner. Without resume (every other policy) the failure points are as above;
* learning: jobs are submitted in runs of CONCURRENT = 500 (a study's share of a cluster,
  or a daily run); each run plans once (as a Snakemake process does) from the jobs of the
  runs before it that finished. ASSUMPTION; the measured peak of a job is its
  memory need and its measured runtime the minutes of the attempts it took (as the step
  runner's usage summary keeps them). ASSUMPTION (the step runner measures the process
  tree's resident memory, as SLURM enforces it).

Run: ``python benchmarks/recovery_cost.py [--jobs N] [--seed S] [--mem-per-core-mb M]``.
It prints ``learned/oracle`` for billed and wasted core-hours and learned's reserved
memory-hours against cause-aware's (issue 13's targets: <= 1.03, <= 2x, not above).
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from neuroflow_recover.step.attempts import AttemptRecord
from neuroflow_recover.step.billing import BillingModel
from neuroflow_recover.step.learning import WINDOW, LearnSettings, Sample, learned_request
from neuroflow_recover.step.resource_plan import stage_floor, within_billing
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
NODE_SHARE = 0.25  # resume: at most this share of the work is lost with the running node
RESUME_OVERHEAD_MIN = 5  # resume: re-checking the cached nodes, starting the container
CONCURRENT = 500  # learning: jobs per run; a run learns from the runs before it


@dataclass
class Job:
    mem_mb: int
    runtime_min: float
    fatal: str | None  # ValidationError / ConfigurationError / NonRetryableError, or None
    draws: list[tuple[float, float, float]]  # per attempt: transient?, when, classifier
    lost: list[float] = field(default_factory=list)  # per attempt: share of NODE_SHARE lost


@dataclass(frozen=True)
class Policy:
    name: str
    growth: str = "config"  # config | doubling
    blind: bool = False
    repeat_rule: bool = True
    resume: bool = False
    learned: bool = False
    raise_memory: str = "never"  # the billing raise (step.billing RAISE_MODES)
    oracle: bool = False


POLICIES = (
    Policy("blind-doubling", growth="doubling", blind=True),
    Policy("blind-config", blind=True),
    Policy("cause-aware"),
    Policy("cause-aware-x2", growth="doubling"),
    Policy("no-repeat-rule", repeat_rule=False),
    Policy("cause-aware+resume", resume=True),
    Policy("learned", learned=True, resume=True, raise_memory="retries"),
    Policy("learned-no-resume", learned=True, raise_memory="retries"),
    Policy("learned+free-share", learned=True, resume=True, raise_memory="first_attempt"),
    Policy("oracle", oracle=True),
    Policy("oracle+resume", oracle=True, resume=True),
)


@dataclass
class Outcome:
    core_hours: float = 0.0
    wasted: float = 0.0  # core-hours that bought no result (see the module doc)
    reserved_gbh: float = 0.0  # requested memory (GB) x elapsed hours, every attempt
    attempts: int = 0  # Snakemake attempts (a fail-fast attempt takes seconds)
    tool_runs: int = 0  # attempts that started the tool
    finished: int = 0
    dead: int = 0


def make_jobs(n: int, seed: int, attempts: int) -> list[Job]:
    rng = random.Random(seed)
    nodes = random.Random(seed + 1)  # a separate stream: the jobs above stay the same
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
        lost = [nodes.random() for _ in range(attempts)]
        jobs.append(Job(int(mem), runtime, fatal, draws, lost))
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


def resumed_outcome(job: Job, res: dict[str, int], k: int, done: float) -> tuple[str | None, float, float]:
    """Like attempt_outcome, for a tool that resumes from ``done`` (share of its work
    finished and cached): (cause, hours, share of the work reached when it stopped)."""
    transient, when, _ = job.draws[k]
    if job.fatal in ("ConfigurationError", "ValidationError"):
        return attempt_outcome(job, res, k) + (done,)
    full, limit = job.runtime_min, res["runtime"]
    overhead = RESUME_OVERHEAD_MIN if done > 0 else 0.0
    events = []  # (minutes into this attempt, cause, share reached)
    crash = 0.2 + 0.6 * job.draws[0][1]  # the same node every time
    if job.fatal == "NonRetryableError" and job.mem_mb <= res["mem_mb"]:
        events.append((overhead + max(crash - done, 0) * full, "NonRetryableError", crash))
    peak = 0.1 + 0.5 * job.draws[0][1]  # the memory peak: the same node every time
    if job.mem_mb > res["mem_mb"] and done < peak:
        events.append((overhead + (peak - done) * full, MEMORY, peak))
    span = overhead + (1 - done) * full
    if transient < P_TRANSIENT:
        at = when * min(span, limit)
        events.append((at, "TransientError", done + max(at - overhead, 0) / full))
    events.append((limit, RUNTIME, done + max(limit - overhead, 0) / full))
    minutes, cause, reached = min(events)
    if span <= minutes:
        return None, span / 60, 1.0
    return cause, minutes / 60, min(reached, 1.0)


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


@dataclass
class Stage:
    """The stage's settings as the policies use them."""

    cfg: dict
    base: dict
    growth: dict
    maximum: dict
    floor: dict
    learn: LearnSettings
    max_attempts: int


DOUBLING = {**{key: 2.0 for key in RESOURCE_KEYS}, "threads": 1.0}  # memory, time, disk


def resources_for(policy: Policy, stage: Stage, first: dict, causes: list[str], k: int,
                  billing: BillingModel) -> dict[str, int]:
    """Attempt k+1's resources after the causes of the attempts before it."""
    factors = DOUBLING if policy.growth == "doubling" else stage.growth
    if policy.oracle:
        return first
    if policy.blind:
        return grow(first, factors, stage.maximum, [UNKNOWN] * k, cause_aware=False)
    res = grow(first, factors, stage.maximum, causes)
    return within_billing(res, k + 1, stage.maximum, billing) if policy.learned else res


def run_job(job: Job, policy: Policy, stage: Stage, first: dict, billing: BillingModel,
            out: Outcome) -> Sample | None:
    """Run one job until it finishes or is dead-lettered; its sample when it finished."""
    causes: list[str] = []  # cause per failed attempt, as resources.cause_of names them
    previous: AttemptRecord | None = None
    done, minutes, waste, spent, res = 0.0, 0.0, 0.0, 0.0, dict(first)
    for k in range(stage.max_attempts):
        if causes and causes[-1] == "final" and not policy.blind:  # fail fast: no tool run
            out.core_hours += billed(SKIP_SECONDS / 3600, res)
            out.reserved_gbh += res["mem_mb"] / 1024 * SKIP_SECONDS / 3600
            out.attempts += 1
            continue
        res = resources_for(policy, stage, first, causes, k, billing)
        if policy.resume:
            cause, hours, reached = resumed_outcome(job, res, k, done)
        else:
            (cause, hours), reached = attempt_outcome(job, res, k), 0.0
        cost = billed(hours, res)
        spent += cost
        out.core_hours += cost
        out.reserved_gbh += res["mem_mb"] / 1024 * hours
        out.attempts += 1
        out.tool_runs += 1
        minutes += hours * 60
        if policy.resume and done > 0:
            waste += billed(RESUME_OVERHEAD_MIN / 60, res)
        if cause is None:
            out.finished += 1
            out.wasted += waste
            return Sample(job.mem_mb, round(minutes, 3), res["threads"])
        kept = max(done, reached - NODE_SHARE * job.lost[k]) if policy.resume else 0.0
        waste += cost - billed((kept - done) * job.runtime_min / 60, res)
        done = kept
        # a crash prints the same message every time: known or not, for all attempts
        named = (job.draws[0][2] < P_CRASH_NAMED if cause == "NonRetryableError"
                 else job.draws[k][2] < P_CAUSE_NAMED)
        record = record_for(cause, named, k + 1, res)
        if policy.repeat_rule:
            record = checked(previous, record, stage.cfg)
        causes.append(cause_of(record))
        previous = record
    out.dead += 1
    out.wasted += spent  # a job that never finishes: every tool run of it was wasted
    return None


def oracle_first(job: Job, stage: Stage) -> dict | None:
    if job.fatal or job.mem_mb > stage.maximum["mem_mb"]:
        return None
    res = dict(stage.base)
    res["mem_mb"] = max(stage.base["mem_mb"], job.mem_mb)
    res["runtime"] = max(stage.base["runtime"], math.ceil(job.runtime_min))
    return res


def simulate(jobs: list[Job], policy: Policy, stage: Stage) -> Outcome:
    out = Outcome()
    billing = BillingModel("max_tres", MEM_PER_CORE_MB, raise_memory=policy.raise_memory)
    known: list[Sample] = []  # the samples of the jobs of earlier batches that finished
    batch: list[Sample] = []
    first = dict(stage.base)
    for index, job in enumerate(jobs):
        if policy.oracle:
            first = oracle_first(job, stage)
            if first is None:
                out.dead += 1
                continue
        elif policy.learned and index and index % CONCURRENT == 0:  # a new run plans
            known, batch = (known + batch)[-WINDOW:], []
            found = learned_request(known, stage.learn, stage.base["threads"], stage.floor,
                                    stage.maximum)
            first = within_billing({**stage.base, **(found or {})}, 1, stage.maximum, billing)
        sample = run_job(job, policy, stage, first, billing, out)
        if sample is not None:
            batch.append(sample)
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
    stage = Stage(cfg, base, growth, maximum, stage_floor(cfg, STAGE, base),
                  LearnSettings.from_config(cfg, STAGE), max_attempts)
    jobs = make_jobs(args.jobs, args.seed, max_attempts)
    need_mem = sum(j.mem_mb > base["mem_mb"] for j in jobs) / len(jobs)
    need_time = sum(j.runtime_min > base["runtime"] for j in jobs) / len(jobs)
    print(f"{len(jobs)} {STAGE} jobs, seed {args.seed}, max_attempts {max_attempts}, "
          f"base {base}, growth {growth}, max {maximum}")
    print(f"jobs over base memory {need_mem:.1%}, over base runtime {need_time:.1%}, "
          f"over the memory cap {P_EXTREME:.1%}; transient {P_TRANSIENT:.0%}/attempt, "
          f"validation {P_VALIDATION:.1%}, configuration {P_CONFIGURATION:.1%}, "
          f"mid-run data crash {P_DATA_CRASH:.1%}; billing max(threads, mem/{MEM_PER_CORE_MB} MB)")
    print(f"learned: {stage.learn}, floor {stage.floor}; runs of {CONCURRENT} jobs; resume "
          f"loses up to {NODE_SHARE:.0%} of a job's work, costs {RESUME_OVERHEAD_MIN} min")
    print()
    results = {policy.name: simulate(jobs, policy, stage) for policy in POLICIES}
    print_table(results)
    print_ratios(results)


def print_table(results: dict[str, Outcome]) -> None:
    header = (f"{'policy':<19} {'core-hours':>12} {'wasted':>10} {'mem GB-h':>11} "
              f"{'attempts':>9} {'tool runs':>9} {'finished':>9} {'dead-letter':>11}")
    print(header)
    print("-" * len(header))
    for policy, r in results.items():
        print(f"{policy:<19} {r.core_hours:>12,.0f} {r.wasted:>10,.0f} {r.reserved_gbh:>11,.0f} "
              f"{r.attempts:>9} {r.tool_runs:>9} {r.finished:>9} {r.dead:>11}")
    print()


def print_ratios(results: dict[str, Outcome]) -> None:
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
    learned, oracle, aware = results["learned"], results["oracle"], results["cause-aware"]
    print(f"learned/oracle: billed={learned.core_hours / oracle.core_hours:.3f} "
          f"wasted={learned.wasted / oracle.wasted:.2f}x; "
          f"reserved memory learned/cause-aware={learned.reserved_gbh / aware.reserved_gbh:.3f}")
    resumed = results["oracle+resume"]
    print(f"against oracle+resume: billed={learned.core_hours / resumed.core_hours:.3f} "
          f"wasted={learned.wasted / resumed.wasted:.2f}x; resume alone: "
          f"cause-aware+resume/cause-aware={results['cause-aware+resume'].core_hours / ca:.3f}, "
          f"learned/learned-no-resume="
          f"{learned.core_hours / results['learned-no-resume'].core_hours:.3f}")
    free = results["learned+free-share"]
    print(f"free share on first attempts: billed {free.core_hours / oracle.core_hours:.3f} of the "
          f"oracle, reserved memory {free.reserved_gbh / aware.reserved_gbh:.2f}x cause-aware's")


if __name__ == "__main__":
    main()
