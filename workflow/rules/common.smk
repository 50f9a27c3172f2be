# Shared Python for the rules: config and sheet loaded ONCE, resources per attempt, the
# step-runner prefix and the tool command lines. Everything else is in the package.
#
# Scale (benchmarks/dag_scale.py): every callable below is evaluated once per job, so they
# are plain dictionary lookups plus string building, with their arguments declared up front
# (`job_args`) so Snakemake does not inspect their signatures for every job.
import functools
import gc
import inspect
import json
import shlex
from pathlib import Path

from snakemake.common import overwrite_function_params

from neuroflow_recover import containers
from neuroflow_recover.config import stage_max_attempts, validate_config
from neuroflow_recover.errors import SheetError
from neuroflow_recover.layout import RULE_STAGE, Layout, final_targets
from neuroflow_recover.resources import stage_resources
from neuroflow_recover.sheet import load_sessions, sessions_by_subject

# Python's cyclic garbage collector costs time proportional to the objects alive, and the
# DAG of 10,000 sessions is millions of them: it is off while Snakemake builds the DAG
# (a 10,000-session dry run: ~100 s -> ~55 s) and back on, with the DAG frozen out of its
# way, once the run starts (onstart in the Snakefile; dry runs just end).
gc.disable()

# one schema for Snakemake and neuroflow-recover: workflow/schemas/
SCHEMA_DIR = Path(workflow.basedir) / "schemas"

# fills the defaults; a ConfigError names the offending keys
validate_config(config, schema_dir=SCHEMA_DIR)
LAYOUT = Layout.from_config(config)
SESSIONS = load_sessions(config["sessions"], schema_dir=SCHEMA_DIR)
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


def start_collecting_garbage():
    """Re-enable the garbage collector; the DAG built so far stays out of its scans."""
    gc.freeze()
    gc.enable()


def job_args(func):
    """Hand Snakemake the callable's parameters once (it inspects them for every job)."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


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


@functools.lru_cache(maxsize=None)
def _attempt_resources(rule, wildcards, attempt):
    return stage_resources(config, rule, dict(wildcards), attempt, workdir=".")


def resource(rule, name):
    """A callable giving `name` of stage_resources() for the job's attempt."""

    @job_args
    def get(wildcards, attempt):
        return _attempt_resources(rule, tuple(wildcards.items()), attempt)[name]

    return get


@job_args
def attempt_number(wildcards, attempt):
    """Makes the attempt visible in the main log's job block and to the step runner."""
    return attempt


def session_of(wildcards):
    try:
        return SESSION[(wildcards.subject, wildcards.session)]
    except KeyError:
        raise SheetError(
            f"subject {wildcards.subject} session {wildcards.session} is not in the "
            f"sessions sheet {config['sessions']}"
        ) from None


# --- inputs --------------------------------------------------------------------------


@job_args
def dicom_dir(wildcards):
    """The session's DICOM directory: must exist, its timestamp never re-runs a job."""
    return ancient(session_of(wildcards).dicom_dir)


@job_args
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


@job_args
def step_runner(wildcards, output):
    return STEP_RUNNER


def expect_args(paths):
    """`--expect P ...`: the step runner fails the job when the tool skipped one of them."""
    return " ".join(f"--expect {shlex.quote(str(p))}" for p in paths)


@job_args
def expect_outputs(wildcards, output):
    return expect_args(output)


@job_args
def qsiprep_expect(wildcards, output):
    preprocessed = [
        LAYOUT.qsiprep_preproc_dwi(wildcards.subject, session)
        for session in SUBJECT_SESSIONS[wildcards.subject]
    ]
    return expect_args(list(output) + preprocessed)


@job_args
def qsirecon_expect(wildcards, output):
    return expect_args(list(output) + LAYOUT.qsirecon_atlas_tables())


@job_args
def qsiprep_work(wildcards, output):
    return LAYOUT.work("qsiprep", wildcards.subject)


@job_args
def qsirecon_work(wildcards, output):
    return LAYOUT.work("qsirecon", wildcards.subject, wildcards.session)


@job_args
def heudiconv_tool(wildcards, threads, resources):
    return shlex.join(containers.heudiconv_command(config, session_of(wildcards)))


@job_args
def qsiprep_tool(wildcards, threads, resources):
    sessions = SUBJECT_SESSIONS[wildcards.subject]
    command = containers.qsiprep_command(
        config, wildcards.subject, sessions, threads, resources.mem_mb
    )
    return shlex.join(command)


@job_args
def qsirecon_tool(wildcards, threads, resources):
    command = containers.qsirecon_command(
        config, wildcards.subject, wildcards.session, threads, resources.mem_mb
    )
    return shlex.join(command)


@job_args
def qsiparc_tool(wildcards, threads, resources):
    command = containers.qsiparc_command(
        config, wildcards.subject, wildcards.session, threads
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
