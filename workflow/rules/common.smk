# Shared Python for the rules: config and sheet loaded ONCE, resources per attempt, the
# step-runner prefix and the tool command lines. Everything else is in the package.
#
# Scale (benchmarks/dag_scale.py): every callable below is evaluated once per job, so they
# are plain dictionary lookups plus string building, with their arguments declared up front
# (`job_args`) so Snakemake does not inspect their signatures for every job. Attempt 1's
# resources are a dictionary lookup, and the step runner's wildcards and files are one param
# each (Snakemake formats every job's shell command three times, even in a quiet dry run:
# fewer fields, less time).
import functools
import gc
import inspect
import json
import shlex
from pathlib import Path

from snakemake.resources import Resource

try:  # internals of the pinned Snakemake; only a speed-up (see job_args)
    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, overwrite_function_params
except ImportError:  # pragma: no cover - a newer Snakemake: same results, slower DAG
    FUNC_OVERWRITE_PARAMS_ATTR = None

    def overwrite_function_params(func, params):
        pass


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


# Snakemake 9 evaluates every callable resource through its own Resource.evaluate(*args,
# **kwargs) and looks up that method's signature twice per resource of every job (six
# resources per job: ~10 % of a 10,000-session dry run). Handing it over once changes
# nothing else: the same parameters, minus `self` as for the bound method.
if FUNC_OVERWRITE_PARAMS_ATTR and not hasattr(
    Resource.evaluate, FUNC_OVERWRITE_PARAMS_ATTR
):
    _self, *_evaluate_params = inspect.signature(Resource.evaluate).parameters.values()
    overwrite_function_params(
        Resource.evaluate, inspect.Signature(_evaluate_params).parameters
    )


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


# attempt 1 of every job: the stage's base resources, computed once (they read no file)
BASE_RESOURCES = {
    name: stage_resources(config, name, {}, 1, workdir=".") for name in RULE_STAGE
}


@functools.lru_cache(maxsize=None)
def _attempt_resources(rule, wildcards, attempt):
    return stage_resources(config, rule, dict(wildcards), attempt, workdir=".")


def resource(rule, name):
    """A callable giving `name` of stage_resources() for the job's attempt."""
    base = BASE_RESOURCES[rule][name]

    @job_args
    def get(wildcards, attempt):
        if attempt == 1:
            return base
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

    @job_args
    def runner(wildcards, output):
        session = getattr(wildcards, "session", None)
        if session is None:
            return prefix + wildcards.subject
        return f"{prefix}{wildcards.subject} --wildcards session={session}"

    return runner


def step_files(rule, extra_expect=None):
    """`--log LOG --expect OUT ...` of the step runner (one param): LOG is the rule's
    `log:` (LAYOUT.log of the same wildcards), the declared outputs and
    `extra_expect(wildcards)` are expected.

    Whatever depends on the attempt (`--attempt`, resources, threads) stays in the shell
    command: Snakemake re-evaluates resources for a retry but keeps the params.
    """

    @job_args
    def files(wildcards, output):
        log = LAYOUT.log(rule, wildcards.subject, getattr(wildcards, "session", None))
        expect = list(output)
        if extra_expect is not None:
            expect += extra_expect(wildcards)
        return f"--log {shlex.quote(log)} {expect_args(expect)}"

    return files


@job_args
def qsiprep_work(wildcards, output):
    return LAYOUT.work("qsiprep", wildcards.subject)


@job_args
def qsirecon_work(wildcards, output):
    return LAYOUT.work("qsirecon", wildcards.subject, wildcards.session)


@job_args
def heudiconv_tool(wildcards, output):
    return shlex.join(containers.heudiconv_command(config, session_of(wildcards)))


# The tools' own thread and memory options are placeholders that the step runner fills in
# with the attempt's resources (stepexec.RESOURCE_TOKENS): params are not re-evaluated for
# a retry, the runner's --mem-mb / --threads in the shell command are.
# The tool functions take `output` so that Snakemake counts them as derived params, outside
# its params-changed trigger: their absolute host paths (bind mounts) would otherwise make
# a study directory that was moved or copied re-run every job.
ATTEMPT_THREADS = "@NEUROFLOW_THREADS@"
ATTEMPT_MEM_MB = "@NEUROFLOW_MEM_MB@"


@job_args
def qsiprep_tool(wildcards, output):
    sessions = SUBJECT_SESSIONS[wildcards.subject]
    command = containers.qsiprep_command(
        config, wildcards.subject, sessions, ATTEMPT_THREADS, ATTEMPT_MEM_MB
    )
    return shlex.join(command)


@job_args
def qsirecon_tool(wildcards, output):
    command = containers.qsirecon_command(
        config, wildcards.subject, wildcards.session, ATTEMPT_THREADS, ATTEMPT_MEM_MB
    )
    return shlex.join(command)


@job_args
def qsiparc_tool(wildcards, output):
    command = containers.qsiparc_command(
        config, wildcards.subject, wildcards.session, ATTEMPT_THREADS
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
