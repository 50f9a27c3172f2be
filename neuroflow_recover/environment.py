"""The environment variables neuroflow reads, and reading a setting from one."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence

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
# set by `run` for a pending-only plan: the Snakefile reads this sheet (the subjects with
# work) instead of the study's; jobs on compute nodes inherit it
PLAN_SHEET = "NEUROFLOW_PLAN_SHEET"
# Python's own: keeps the working directory off sys.path of `python -m ...`. Set with
# SAFE_PATH_SET by the main Snakemake process for its jobs' own Snakemake
# (`keep_workdir_off_job_path`); a job's Snakemake takes both out once started
# (`release_job_path`), so the commands it runs never see them.
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


def keep_workdir_off_job_path(env: MutableMapping[str, str] = os.environ) -> None:
    """A job's own Snakemake on a compute node is `python -m snakemake`, which puts the working
    directory on sys.path, and Snakemake's plugin registries list every directory in it at
    start-up (pkgutil.iter_modules, 5 registries): a DICOM folder of 100,000 sessions in the
    study directory made a job's start 3.2-4.5 s instead of 1.9-2.3 s. PYTHONSAFEPATH=1
    keeps it off; the jobs inherit it (the SLURM plugin submits with --export=ALL). For
    remote jobs only: local jobs run inside the main process."""
    if PYTHON_SAFE_PATH not in env:
        env[PYTHON_SAFE_PATH] = "1"
        env[SAFE_PATH_SET] = "1"


def starts_a_snakemake_per_job(argv: Sequence[str]) -> bool:
    """True for a job's Snakemake whose command line `argv` names a non-local executor: the
    SLURM plugin's job runs `--executor slurm-jobstep`, which starts the job in a second
    `python -m snakemake` (srun); that one still needs PYTHONSAFEPATH to start fast."""
    for index, arg in enumerate(argv):
        if arg in ("--executor", "-e") and index + 1 < len(argv):
            return argv[index + 1] != "local"
        if arg.startswith("--executor="):
            return arg.partition("=")[2] != "local"
    return False


def release_job_path(env: MutableMapping[str, str] = os.environ) -> None:
    """Takes out the PYTHONSAFEPATH neuroflow set for a job's start-up, once it has started:
    the commands the job runs (a tool's or a lab's `python script.py` may import modules
    beside the script) inherit the environment without it. The user's own stays."""
    if flag(env, SAFE_PATH_SET):
        env.pop(PYTHON_SAFE_PATH, None)
        env.pop(SAFE_PATH_SET, None)


def tool_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a tool, without the PYTHONSAFEPATH neuroflow set for its jobs' start-up (in
    case a job's Snakemake did not take it out: `release_job_path`)."""
    tool = dict(env)
    release_job_path(tool)
    return tool


def flag(env: Mapping[str, str], name: str) -> bool:
    """True when `name` is set to 1, true or yes."""
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes")
