# Shared Python for the rules: config and sheet loaded ONCE, the step-runner command every
# rule runs, resources per attempt, inputs and the tool command lines. Everything else is
# in the package (neuroflow_recover.workflow, .step).
#
# Every callable below is evaluated once per job of a large DAG: plain dictionary lookups
# and string building, declared to Snakemake once (dag_speed; measured there).
import functools
import json
import os
import shlex
import sys
from pathlib import Path

from neuroflow_recover.step.resource_plan import resource_plan as plan_resources
from neuroflow_recover.step.resources import stage_resources
from neuroflow_recover.workflow import containers, dag_speed
from neuroflow_recover.workflow.config import stage_max_attempts, validate_config
from neuroflow_recover import environment
from neuroflow_recover.errors import SheetError
from neuroflow_recover.workflow.layout import RULE_STAGE, Layout, final_targets
from neuroflow_recover.workflow.sheet import (
    job_subjects,
    load_sessions,
    sessions_by_subject,
)

dag_speed.pause_garbage_collector()  # resumed in onstart (Snakefile)
dag_speed.declare_resource_evaluate()
if not (workflow.is_main_process or environment.starts_a_snakemake_per_job(sys.argv)):
    environment.release_job_path()  # started: the commands this job runs don't inherit it
declare_params = dag_speed.declare_params

# one schema for Snakemake and neuroflow-recover: workflow/schemas/
SCHEMA_DIR = Path(workflow.basedir) / "schemas"

# fills the defaults; a ConfigError names the offending keys
validate_config(config, schema_dir=SCHEMA_DIR)
LAYOUT = Layout.from_config(config)
# a pending-only plan of `neuroflow-recover run` hands over the subjects with work only
SHEET = os.environ.get(environment.PLAN_SHEET) or config["sessions"]
# a SLURM job's own Snakemake needs only the rows of its jobs' subjects (start-up time and
# memory independent of the sheet's size); the main process validated the whole sheet
JOB_SUBJECTS = None if workflow.is_main_process else job_subjects(sys.argv)
SESSIONS = load_sessions(SHEET, schema_dir=SCHEMA_DIR, subjects=JOB_SUBJECTS)
SESSION = {(s.subject, s.session): s for s in SESSIONS}
SUBJECT_SESSIONS = {
    subject: [s.session for s in rows]
    for subject, rows in sessions_by_subject(SESSIONS).items()
}
TEMPLATEFLOW = config["templateflow_home"]

# `neuroflow-recover [--configfile F ...] exec`: the step runner gets the config files
# Snakemake got on its command line (absolute paths; config/config.yaml it reads itself).
STEP_RUNNER = shlex.join(
    ["neuroflow-recover"]
    + [arg for f in workflow.overwrite_configfiles for arg in ("--configfile", str(f))]
    + ["exec"]
)

# --- the step every stage rule runs -----------------------------------------------------
# Whatever depends on the attempt (--attempt, resources, threads) is in the shell command:
# Snakemake re-evaluates resources for a retry but keeps the params. The runner's
# --rule/--wildcards and --log/--expect are one param each (Snakemake formats every job's
# command three times, even in a quiet dry run: fewer fields, less time).
STEP_SHELL = (
    "{params.step}"
    " --attempt {resources.attempt} {params.files}"
    " --mem-mb {resources.mem_mb} --runtime {resources.runtime}"
    " --disk-mb {resources.disk_mb} --threads {threads}"
    " -- {params.tool}"
)
# BIDS Apps get a work directory: the step runner keeps it for a retry after a time limit,
# a memory kill or a transient failure (the app resumes) and removes it after success
STEP_SHELL_WITH_WORK = STEP_SHELL.replace(
    " -- {params.tool}", " --work {params.work:q} -- {params.tool}"
)


def speed_up_remote_jobs_start():
    """onstart: jobs on other machines (SLURM) start their own Snakemake, faster with
    PYTHONSAFEPATH (environment.py). Local jobs run in this process: nothing to set for them.
    The executor plugin interface's `non_local_exec`; without it, set for every executor.
    """
    settings = getattr(workflow.executor_plugin, "common_settings", None)
    if getattr(settings, "non_local_exec", True):
        environment.keep_workdir_off_job_path()


def ingest_own_log(log):
    """The run's main log into the dead-letter queue (main process only; never fails)."""
    if workflow.is_main_process:
        from neuroflow_recover.recover.hooks import ingest_own_log as ingest

        ingest(log, [str(f) for f in workflow.overwrite_configfiles])


def retries(rule):
    """Rule-level retries = max_attempts - 1 of the rule's stage, in the main process only.

    Inside a SLURM job (not the main process) the rule-level value would make the jobstep
    retry inside the same allocation, with resources it never got and invisible to the main
    log (snakemake-executor-plugin-slurm#284); there it is 0, and the main process
    resubmits the job with the next attempt's resources instead.
    """
    if not workflow.is_main_process:
        return 0
    return stage_max_attempts(config, RULE_STAGE[rule]) - 1


@functools.cache
def resource_plan():
    """First attempts of every stage (learned from history, raised where the cluster's
    billing makes memory free): made ONCE per Snakemake process, at the first job, when
    the executor is known; the main process hands it to its jobs (step.resource_plan).
    """
    executor = getattr(workflow.executor_plugin, "name", None)
    return plan_resources(config, ".", main=workflow.is_main_process, executor=executor)


@functools.lru_cache(maxsize=None)
def _attempt_resources(rule, wildcards, attempt):
    return stage_resources(
        config, rule, dict(wildcards), attempt, workdir=".", plan=resource_plan()
    )


def resource(rule, name):
    """A callable giving `name` of stage_resources() for the job's attempt."""
    stage = RULE_STAGE[rule]

    @declare_params
    def get(wildcards, attempt):
        if attempt == 1:
            return resource_plan().first[stage][name]
        return _attempt_resources(rule, tuple(wildcards.items()), attempt)[name]

    return get


@declare_params
def attempt_number(wildcards, attempt):
    """Makes the attempt visible in the main log's job block and to the step runner."""
    return attempt


def step_resources(rule):
    """The `resources:` of a stage rule: memory, runtime and disk per attempt, the attempt."""
    return {
        "mem_mb": resource(rule, "mem_mb"),
        "runtime": resource(rule, "runtime"),
        "disk_mb": resource(rule, "disk_mb"),
        "attempt": attempt_number,
    }


def step_params(rule, tool, extra_expect=None, work=None):
    """The `params:` of a stage rule: the runner's prefix and files, the tool command line
    (a callable of the job), and the scratch directory for STEP_SHELL_WITH_WORK."""
    params = {
        "step": step_runner(rule),
        "files": step_files(rule, extra_expect),
        "tool": tool,
    }
    if work is not None:
        params = {"work": work, **params}
    return params


def session_of(wildcards):
    try:
        return SESSION[(wildcards.subject, wildcards.session)]
    except KeyError:
        raise SheetError(
            f"subject {wildcards.subject} session {wildcards.session} is not in the "
            f"sessions sheet {config['sessions']}"
        ) from None


# --- inputs --------------------------------------------------------------------------


@declare_params
def dicom_dir(wildcards):
    """The session's DICOM directory: must exist, its timestamp never re-runs a job."""
    return ancient(session_of(wildcards).dicom_dir)


@declare_params
def subject_bids_files(wildcards):
    """Every BIDS file of every session of the subject in the sheet (QSIPrep's input):
    a session added to the sheet re-runs that subject's QSIPrep and what follows it."""
    return [
        path
        for session in SUBJECT_SESSIONS[wildcards.subject]
        for path in LAYOUT.bids_session_files(wildcards.subject, session)
    ]


def recon_spec_file():
    """The recon-spec YAML/JSON as an input when it is a file (a built-in name is not)."""
    spec = config["stages"]["qsirecon"]["recon_spec"]
    return ancient(spec) if spec.endswith(containers.SPEC_SUFFIXES) else []


# --- params --------------------------------------------------------------------------
# Every param takes `output`, `threads` or `resources`: such "derived" params are left out
# of Snakemake's params re-run trigger. They hold absolute paths (made absolute when the
# job is created), per-attempt resources and the config file paths of this invocation,
# none of which may ever re-run a finished job.


def expect_args(paths):
    """`--expect P ...`: the step runner fails the job when the tool skipped one of them."""
    return " ".join(f"--expect {shlex.quote(str(p))}" for p in paths)


def qsiprep_expect(wildcards):
    """Besides the report: every session's preprocessed DWI."""
    return [
        LAYOUT.qsiprep_preproc_dwi(wildcards.subject, session)
        for session in SUBJECT_SESSIONS[wildcards.subject]
    ]


QSIRECON_ATLAS_TABLES = LAYOUT.qsirecon_atlas_tables()


def qsirecon_expect(wildcards):
    """Besides the declared outputs: the atlas tables shared by all sessions."""
    return QSIRECON_ATLAS_TABLES


def step_runner(rule):
    """`neuroflow-recover [--configfile F ...] exec --rule R --wildcards subject=S
    [--wildcards session=E]`: the start of the rule's step-runner command (one param).
    """
    prefix = f"{STEP_RUNNER} --rule {rule} --wildcards subject="

    @declare_params
    def runner(wildcards, output):
        session = getattr(wildcards, "session", None)
        if session is None:
            return prefix + wildcards.subject
        return f"{prefix}{wildcards.subject} --wildcards session={session}"

    return runner


def step_files(rule, extra_expect=None):
    """`--log LOG --expect OUT ...` of the step runner (one param): LOG is the rule's
    `log:` (LAYOUT.log of the same wildcards), the declared outputs and
    `extra_expect(wildcards)` are expected."""

    @declare_params
    def files(wildcards, output):
        log = LAYOUT.log(rule, wildcards.subject, getattr(wildcards, "session", None))
        expect = list(output)
        if extra_expect is not None:
            expect += extra_expect(wildcards)
        return f"--log {shlex.quote(log)} {expect_args(expect)}"

    return files


@declare_params
def qsiprep_work(wildcards, output):
    return LAYOUT.job_work("qsiprep_preprocess", wildcards)


@declare_params
def qsirecon_work(wildcards, output):
    return LAYOUT.job_work("qsirecon_reconstruct", wildcards)


@declare_params
def heudiconv_tool(wildcards, output):
    return shlex.join(
        containers.heudiconv_command(config, session_of(wildcards), layout=LAYOUT)
    )


# The tools' own thread and memory options are placeholders that the step runner fills in
# with the attempt's resources (step.runner.RESOURCE_TOKENS): params are not re-evaluated
# for a retry, the runner's --mem-mb / --threads in the shell command are.
# The tool functions take `output` so that Snakemake counts them as derived params, outside
# its params-changed trigger: their absolute host paths (bind mounts) would otherwise make
# a study directory that was moved or copied re-run every job.
ATTEMPT_THREADS = "@NEUROFLOW_THREADS@"
ATTEMPT_MEM_MB = "@NEUROFLOW_MEM_MB@"


@declare_params
def qsiprep_tool(wildcards, output):
    sessions = SUBJECT_SESSIONS[wildcards.subject]
    command = containers.qsiprep_command(
        config,
        wildcards.subject,
        sessions,
        ATTEMPT_THREADS,
        ATTEMPT_MEM_MB,
        layout=LAYOUT,
    )
    return shlex.join(command)


@declare_params
def qsirecon_tool(wildcards, output):
    command = containers.qsirecon_command(
        config,
        wildcards.subject,
        wildcards.session,
        ATTEMPT_THREADS,
        ATTEMPT_MEM_MB,
        layout=LAYOUT,
    )
    return shlex.join(command)


@declare_params
def qsiparc_tool(wildcards, output):
    command = containers.qsiparc_command(
        config, wildcards.subject, wildcards.session, ATTEMPT_THREADS, layout=LAYOUT
    )
    return shlex.join(command)


# --- the top-level BIDS file ------------------------------------------------------------


def write_dataset_description(path, log):
    """bids/dataset_description.json, written once (HeudiConv runs with `-b notop`)."""
    description = {
        "Name": "neuroflow BIDS conversion",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "heudiconv", "Description": "neuroflow, -b notop"}],
    }
    Path(path).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    Path(log).write_text(f"wrote {path}\n", encoding="utf-8")
