# Shared Python for the rules: config and sheet loaded ONCE, resources per attempt, the
# step-runner prefix and the tool command lines. Everything else is in the package.
import functools
import json
import shlex
from pathlib import Path

from neuroflow_recover import containers
from neuroflow_recover.config import stage_max_attempts, validate_config
from neuroflow_recover.layout import RULE_STAGE, Layout, final_targets
from neuroflow_recover.resources import stage_resources
from neuroflow_recover.sheet import load_sessions, sessions_by_subject

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


def step_runner(wildcards, resources):
    """STEP_RUNNER as a param (derived: the config file paths never re-run a job)."""
    return STEP_RUNNER


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
    """A resource callable: `name` of stage_resources() for this job's attempt."""

    def get(wildcards, attempt):
        key = tuple(sorted(wildcards.items()))
        return _attempt_resources(rule, key, attempt)[name]

    return get


def attempt_number(wildcards, attempt):
    """Makes the attempt visible in the main log's job block and to the step runner."""
    return attempt


def session_of(wildcards):
    try:
        return SESSION[(wildcards.subject, wildcards.session)]
    except KeyError:
        raise ValueError(
            f"subject {wildcards.subject} session {wildcards.session} is not in the "
            f"sessions sheet {config['sessions']}"
        ) from None


def expect_args(paths):
    """`--expect P ...`: the step runner fails the job when the tool skipped one of them."""
    return " ".join(f"--expect {shlex.quote(str(p))}" for p in paths)


# Tool commands are params taking `threads`/`resources`: they hold per-attempt values and
# absolute paths (made absolute when the job is created), and such derived params are left
# out of Snakemake's params re-run trigger, so neither ever re-runs a finished job.
def heudiconv_tool(wildcards, threads, resources):
    return shlex.join(containers.heudiconv_command(config, session_of(wildcards)))


def qsiprep_tool(wildcards, threads, resources):
    sessions = SUBJECT_SESSIONS[wildcards.subject]
    command = containers.qsiprep_command(
        config, wildcards.subject, sessions, threads, resources.mem_mb
    )
    return shlex.join(command)


def qsirecon_tool(wildcards, threads, resources):
    command = containers.qsirecon_command(
        config, wildcards.subject, wildcards.session, threads, resources.mem_mb
    )
    return shlex.join(command)


def qsiparc_tool(wildcards, threads, resources):
    command = containers.qsiparc_command(
        config, wildcards.subject, wildcards.session, threads
    )
    return shlex.join(command)


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
