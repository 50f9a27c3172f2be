"""The workflow's DAG, from Snakemake dry runs on generated sheets (no tool runs)."""

from __future__ import annotations

import shlex

import pytest
import yaml

from neuroflow_recover.step.resources import stage_resources
from neuroflow_recover.workflow.config import load_config
from neuroflow_recover.workflow.layout import Layout, final_targets
from neuroflow_recover.workflow.sheet import load_sessions
from workflow_study import REPO, dry_run, job_counts, jobs, make_study, snakemake, write_sheet

STAGE_RULES = ("heudiconv_convert", "qsiprep_preprocess", "qsirecon_reconstruct", "qsiparc_parcellate")


def expected_counts(subjects: int, sessions_per_subject: int) -> dict[str, int]:
    n = subjects * sessions_per_subject
    return {
        "bids_describe": 1,
        "heudiconv_convert": n,
        "qsiprep_preprocess": subjects,
        "qsirecon_reconstruct": n,
        "qsiparc_parcellate": n,
        "all": 1,
    }


@pytest.mark.parametrize("subjects,sessions", [(2, 2), (3, 1), (1, 3)])
def test_jobs_per_rule(tmp_path, subjects, sessions):
    study = make_study(tmp_path / "study", subjects, sessions)
    result = dry_run(study)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == expected_counts(subjects, sessions)


def test_uneven_sessions_one_qsiprep_job_per_subject_over_all_its_sessions(tmp_path):
    pairs = [("01", "01"), ("01", "02"), ("01", "03"), ("02", "01")]
    study = make_study(tmp_path / "study", 2, 3, pairs=pairs)
    result = dry_run(study)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["qsiprep_preprocess"] == 2
    qsiprep = {j["wildcards"]["subject"]: j for j in jobs(result.stdout) if j["rule"] == "qsiprep_preprocess"}
    argv = shlex.split(qsiprep["01"]["shell"].split(" -- ", 1)[1])
    assert argv[argv.index("--session-id") + 1 : argv.index("--output-resolution")] == ["01", "02", "03"]
    runner = shlex.split(qsiprep["01"]["shell"].split(" -- ", 1)[0])
    expected = [
        f"results/derivatives/qsiprep/sub-01/ses-{e}/dwi/sub-01_ses-{e}_space-ACPC_desc-preproc_dwi.nii.gz"
        for e in ("01", "02", "03")
    ]
    expects = [runner[i + 1] for i, a in enumerate(runner) if a == "--expect"]
    assert expects == ["results/derivatives/qsiprep/sub-01.html", *expected]
    argv2 = shlex.split(qsiprep["02"]["shell"].split(" -- ", 1)[1])
    assert argv2[argv2.index("--session-id") + 1] == "01"
    assert argv2[argv2.index("--session-id") + 2] == "--output-resolution"


def test_every_job_runs_through_the_step_runner_with_its_attempt_and_resources(tmp_path):
    study = make_study(tmp_path / "study", 1, 2)
    result = dry_run(study, "--cores", "64")  # no capping of threads to the cores
    assert result.returncode == 0, result.stderr
    cfg = load_config(study, ["config.yaml"])
    seen = set()
    for job in jobs(result.stdout):
        if job["rule"] not in STAGE_RULES:
            continue
        seen.add(job["rule"])
        runner = shlex.split(job["shell"].split(" && ")[-1].split(" -- ", 1)[0])
        assert runner[:4] == ["neuroflow-recover", "--configfile", str(study / "config.yaml"), "exec"]
        options = dict(zip(runner[4::2], runner[5::2]))
        assert options["--rule"] == job["rule"]
        assert options["--attempt"] == "1" == job["resources"]["attempt"]
        base = stage_resources(cfg, job["rule"], job["wildcards"], 1, workdir=study)
        assert int(options["--mem-mb"]) == base["mem_mb"] == int(job["resources"]["mem_mb"])
        assert int(options["--runtime"]) == base["runtime"] == int(job["resources"]["runtime"])
        assert int(options["--disk-mb"]) == base["disk_mb"] == int(job["resources"]["disk_mb"])
        assert int(options["--threads"]) == base["threads"] == job.get("threads", 1)
        wildcards = [runner[i + 1] for i, a in enumerate(runner) if a == "--wildcards"]
        assert wildcards == [f"{k}={v}" for k, v in job["wildcards"].items()]
        assert options["--log"].startswith(f"results/logs/{job['rule']}/sub-01")
    assert seen == set(STAGE_RULES)


def test_rule_all_asks_for_exactly_the_final_targets(tmp_path):
    study = make_study(tmp_path / "study", 2, 2)
    cfg = load_config(study, ["config.yaml"])
    sessions = load_sessions(study / "sessions.tsv")
    result = dry_run(study)
    outputs = [f for j in jobs(result.stdout) if j["rule"] == "qsiparc_parcellate" for f in j["output"]]
    assert sorted(outputs) == sorted(final_targets(cfg, sessions))
    assert len(outputs) == 4 * 3  # 4 sessions x 1 atlas x 3 scalar maps


def test_final_targets_of_one_subject_schedule_only_that_subject(tmp_path):
    study = make_study(tmp_path / "study", 3, 2)
    cfg = load_config(study, ["config.yaml"])
    targets = final_targets(cfg, load_sessions(study / "sessions.tsv"), subject="02")
    result = dry_run(study, *targets)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "bids_describe": 1,
        "heudiconv_convert": 2,
        "qsiprep_preprocess": 1,
        "qsirecon_reconstruct": 2,
        "qsiparc_parcellate": 2,
    }
    assert {j["wildcards"].get("subject") for j in jobs(result.stdout)} - {None} == {"02"}


def test_outputs_follow_the_layout(tmp_path):
    study = make_study(tmp_path / "study", 1, 1, config={"output_dir": "out"})
    cfg = load_config(study, ["config.yaml"])
    layout = Layout.from_config(cfg)
    result = dry_run(study)
    by_rule = {j["rule"]: j for j in jobs(result.stdout)}
    wc = {"subject": "01", "session": "01"}
    for rule in (*STAGE_RULES, "bids_describe"):
        assert by_rule[rule]["output"] == layout.rule_outputs(rule, wc), rule
    assert by_rule["heudiconv_convert"]["output"][0] == "out/bids/sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz"


def test_missing_dicom_directory_is_refused_naming_it(tmp_path):
    study = make_study(tmp_path / "study", 1, 1)
    write_sheet(study, [("01", "01"), ("01", "02")])  # dicom/sub-01/ses-02 does not exist
    result = dry_run(study)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Missing input files for rule heudiconv_convert" in output
    assert "dicom/sub-01/ses-02" in output


def test_missing_license_is_refused_naming_it(tmp_path):
    study = make_study(tmp_path / "study", 1, 1, config={"freesurfer_license": "nowhere/license.txt"})
    result = dry_run(study)
    assert result.returncode != 0
    assert "Missing input files for rule qsiprep_preprocess" in result.stdout + result.stderr
    assert "nowhere/license.txt" in result.stdout + result.stderr


def test_empty_sheet_schedules_no_stage_job(tmp_path):
    study = make_study(tmp_path / "study", 1, 1, pairs=[])
    result = dry_run(study)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {"all": 1}


def test_slurm_profile_builds_the_dag_with_partition_and_account_from_the_environment(tmp_path):
    study = make_study(tmp_path / "study", 2, 1)
    result = snakemake(
        study, "-n", "--profile", str(REPO / "profiles" / "slurm"),
        env_extra={"NEUROFLOW_SLURM_PARTITION": "short", "NEUROFLOW_SLURM_ACCOUNT": "lab42"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stage_jobs = [j for j in jobs(result.stdout) if j["rule"] in STAGE_RULES]
    assert len(stage_jobs) == 2 + 2 + 2 + 2
    for job in stage_jobs:
        assert job["resources"]["slurm_partition"] == "short"
        assert job["resources"]["slurm_account"] == "lab42"


def test_slurm_profile_without_environment_leaves_partition_and_account_empty(tmp_path):
    study = make_study(tmp_path / "study", 1, 1)
    result = snakemake(study, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    assert result.returncode == 0, result.stderr
    job = next(j for j in jobs(result.stdout) if j["rule"] == "qsiprep_preprocess")
    assert job["resources"].get("slurm_partition", "") == ""


def test_profiles_are_documented_yaml():
    for name in ("default", "slurm"):
        text = (REPO / "profiles" / name / "config.yaml").read_text()
        data = yaml.safe_load(text)
        assert "retries" not in data  # rule-level only
        for key in data:  # every entry has a comment line right above it
            lines = text.splitlines()
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
            assert lines[index - 1].startswith("#"), f"{name}: {key} has no comment"
