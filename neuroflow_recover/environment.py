"""The environment variables neuroflow reads, and reading a setting from one."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import NeuroflowError

DB = "NEUROFLOW_DB"  # the dead-letter database (the CLI's --db)
# how long a writer waits for the database's write lock (the CLI's --db-timeout)
DB_TIMEOUT = "NEUROFLOW_DB_TIMEOUT"
# how long one user pattern may search one text (the classifier's backtracking bound)
PATTERN_TIMEOUT = "NEUROFLOW_PATTERN_TIMEOUT"
STALL_SECONDS = "NEUROFLOW_STALL_SECONDS"  # the watchdog's stall timeout (--stall-timeout)
DELAY_SCALE = "NEUROFLOW_DELAY_SCALE"  # multiplies retry delays (run --delay-scale)
# set by `run` for its Snakemake: the step runner defers retries of transient failures
DEFER_TRANSIENT = "NEUROFLOW_DEFER_TRANSIENT"
# set by `run` and `retry` for their Snakemake: they ingest its log themselves, so the
# workflow's end handler leaves it alone
CALLER_INGESTS = "NEUROFLOW_CALLER_INGESTS"
# set by the main Snakemake process for its jobs: the first-attempt resources it planned
# (step/resource_plan.py), so a SLURM job's own Snakemake asks for the same
RESOURCE_PLAN = "NEUROFLOW_RESOURCE_PLAN"
# Python's own: keeps the working directory off sys.path of `python -m ...`. Set with
# SAFE_PATH_SET by the main Snakemake process for its jobs' own Snakemake
# (workflow/dag_speed.py); the step runner takes both out of a tool's environment.
PYTHON_SAFE_PATH = "PYTHONSAFEPATH"
SAFE_PATH_SET = "NEUROFLOW_SAFE_PATH_SET"


def non_negative(name: str, default: float, what: str = "a number", zero: str = "") -> float:
    """The number in environment variable `name` (>= 0), `default` when unset or empty;
    NeuroflowError naming the variable otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise NeuroflowError(f"{name}={raw!r} is not {what}") from exc
    if value < 0:
        raise NeuroflowError(f"{name} must be >= 0{zero}, not {raw}")
    return value


def tool_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a tool: without the PYTHONSAFEPATH neuroflow set for its jobs' Snakemake (a
    tool's `python script.py` may import modules beside the script); the user's own stays."""
    if not flag(env, SAFE_PATH_SET):
        return dict(env)
    return {name: value for name, value in env.items() if name not in (PYTHON_SAFE_PATH, SAFE_PATH_SET)}


def flag(env: Mapping[str, str], name: str) -> bool:
    """True when `name` is set to 1, true or yes."""
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes")
# set by `run` for a pending-only plan: the Snakefile reads this sheet (the subjects with
# work) instead of the study's; jobs on compute nodes inherit it
PLAN_SHEET = "NEUROFLOW_PLAN_SHEET"
