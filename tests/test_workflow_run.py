"""Real runs of the workflow on tiny synthetic data.

HeudiConv + dcm2niix and QSIParc run for real; QSIPrep and QSIRecon are the example's
stand-ins (same command lines, same output layout). Every job goes through the step runner.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from neuroflow_recover.step.attempts import read_records
from neuroflow_recover.workflow.config import load_config
from neuroflow_recover.workflow.layout import Layout, final_targets
from neuroflow_recover.workflow.sheet import load_sessions
from workflow_study import REPO, dry_run, job_counts, jobs, make_study, snakemake

pytestmark = pytest.mark.workflow

PROFILE = str(REPO / "profiles" / "default")
FIRST_SHEET = [("01", "01"), ("02", "01")]


def run(study: Path, *args: str):
    return snakemake(study, "--cores", "2", *args, profile=PROFILE)


def study_with_qsiprep(tmp_path: Path, code: str, max_attempts: int) -> Path:
    """1 subject x 1 session whose QSIPrep is `python -c code`."""
    return make_study(
        tmp_path / "study", 1, 1, real=True,
        config={
            "stages": {"qsiprep": {"container": {"command": f'{sys.executable} -c "{code}"'}}},
            "error_handling": {"pipelines": {"qsiprep": {"max_attempts": max_attempts}}},
        },
    )  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """2 subjects x 1 session run to the end (DICOMs exist for a second session of each)."""
    study = make_study(tmp_path_factory.mktemp("run") / "study", 2, 2, real=True, pairs=FIRST_SHEET)
    result = run(study)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return study


def test_bids_conversion_wrote_nifti_bval_bvec_and_json(finished):
    layout = Layout.from_config(load_config(finished, ["config.yaml"]))
    assert json.loads((finished / layout.dataset_description).read_text())["BIDSVersion"]
    for subject, session in FIRST_SHEET:
        files = [finished / f for f in layout.bids_session_files(subject, session)]
        assert [f.name for f in files] == [
            f"sub-{subject}_ses-{session}_{name}"
            for name in ("T1w.nii.gz", "T1w.json", "dwi.nii.gz", "dwi.bval", "dwi.bvec", "dwi.json")
        ]
        assert all(f.stat().st_size > 0 for f in files)
        dwi = finished / "results/bids" / f"sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_dwi"
        assert Path(f"{dwi}.bval").read_text().split() == ["0", "1000", "1000", "1000"]
        assert len(Path(f"{dwi}.bvec").read_text().split("\n")[0].split()) == 4
        assert json.loads(Path(f"{dwi}.json").read_text())["Manufacturer"] == "Siemens"


def test_qsiprep_ran_once_per_subject(finished):
    layout = Layout.from_config(load_config(finished, ["config.yaml"]))
    for subject, session in FIRST_SHEET:
        assert (finished / layout.qsiprep_report(subject)).is_file()
        assert (finished / layout.qsiprep_preproc_dwi(subject, session)).is_file()


def test_qsiparc_wrote_every_final_diffmap(finished):
    cfg = load_config(finished, ["config.yaml"])
    targets = final_targets(cfg, load_sessions(finished / "sessions.tsv"))
    assert len(targets) == 2 * 3
    for target in targets:
        with open(finished / target, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        assert len(rows) == 4, target  # the stand-in atlas has 4 regions
        assert rows[0]["mean"] not in ("", "nan")


def test_every_job_left_a_log_a_benchmark_and_an_attempt_record(finished):
    layout = Layout.from_config(load_config(finished, ["config.yaml"]))
    jobs_run = [("qsiprep_preprocess", {"subject": s}) for s in ("01", "02")]
    for rule in ("heudiconv_convert", "qsirecon_reconstruct", "qsiparc_parcellate"):
        jobs_run += [(rule, {"subject": s, "session": e}) for s, e in FIRST_SHEET]
    for rule, wc in jobs_run:
        log = finished / layout.log(rule, wc["subject"], wc.get("session"))
        assert "succeeded" in log.read_text(), log
        assert (finished / layout.benchmark(rule, wc["subject"], wc.get("session"))).is_file()
        records = read_records(finished, rule, wc)
        assert [r.attempt for r in records] == [1] and records[0].exit_code == 0


def test_a_second_run_has_nothing_to_do(finished):
    result = dry_run(finished)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr
    assert job_counts(result.stdout) == {}


def test_adding_a_session_reruns_only_that_subjects_qsiprep_and_downstream(finished, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(finished, study, symlinks=True)
    with open(study / "sessions.tsv", "a") as sheet:
        sheet.write("01\t02\tdata/dicom/sub-01/ses-02\n")
    result = dry_run(study)
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout) == {
        "heudiconv_convert": 1,
        "qsiprep_preprocess": 1,
        "qsirecon_reconstruct": 2,
        "qsiparc_parcellate": 2,
        "all": 1,
    }
    planned = {(j["rule"], tuple(sorted(j["wildcards"].items()))) for j in jobs(result.stdout)}
    assert planned == {
        ("heudiconv_convert", (("session", "02"), ("subject", "01"))),
        ("qsiprep_preprocess", (("subject", "01"),)),
        ("qsirecon_reconstruct", (("session", "01"), ("subject", "01"))),
        ("qsirecon_reconstruct", (("session", "02"), ("subject", "01"))),
        ("qsiparc_parcellate", (("session", "01"), ("subject", "01"))),
        ("qsiparc_parcellate", (("session", "02"), ("subject", "01"))),
        ("all", ()),
    }
    qsiprep = next(j for j in jobs(result.stdout) if j["rule"] == "qsiprep_preprocess")
    assert " --session-id 01 02 " in qsiprep["shell"]


def test_retries_follow_max_attempts_with_the_resources_of_each_attempt(tmp_path):
    """A conversion that always dies of memory is attempted max_attempts times (rule-level
    retries), each attempt with the memory stage_resources() gives it after the last one."""
    oom = "import sys; print('MemoryError: Unable to allocate 2.00 GiB', file=sys.stderr); sys.exit(1)"
    study = make_study(
        tmp_path / "study", 1, 1, real=True,
        config={
            "stages": {"bids_conversion": {"container": {"command": f'{sys.executable} -c "{oom}"'}}},
            "error_handling": {"pipelines": {"bids_conversion": {"max_attempts": 3}}},
        },
    )  # fmt: skip
    result = run(study)
    assert result.returncode != 0
    assert result.stderr.count("Trying to restart job") == 2
    records = sorted(
        read_records(study, "heudiconv_convert", {"subject": "01", "session": "01"}),
        key=lambda r: r.attempt,
    )
    assert [r.attempt for r in records] == [1, 2, 3]
    assert [r.error_class for r in records] == ["ResourceError"] * 3
    assert [r.resources["mem_mb"] for r in records] == [1000, 2000, 4000]  # growth 2.0
    assert [r.resources["runtime"] for r in records] == [10, 10, 10]  # not about time


def test_a_retry_gives_the_tool_its_own_memory_and_threads_options_of_that_attempt(tmp_path):
    """The tools' --mem / --nprocs are filled in by the step runner from the attempt's
    resources: params are not re-evaluated for a retry, resources are."""
    oom = (
        "import sys; print('ARGS', *sys.argv[1:]);"
        " print('MemoryError: Unable to allocate 2.00 GiB', file=sys.stderr); sys.exit(1)"
    )
    study = study_with_qsiprep(tmp_path, oom, max_attempts=2)
    result = run(study)
    assert result.returncode != 0
    records = sorted(read_records(study, "qsiprep_preprocess", {"subject": "01"}),
                     key=lambda r: r.attempt)  # fmt: skip
    assert [r.attempt for r in records] == [1, 2]
    for record in records:
        args = next(line for line in record.tail if line.startswith("ARGS")).split()
        assert args[args.index("--mem") + 1] == str(record.resources["mem_mb"])
        assert args[args.index("--nprocs") + 1] == str(record.resources["threads"])
        assert "@NEUROFLOW" not in " ".join(args)
    assert records[1].resources["mem_mb"] > records[0].resources["mem_mb"]


def test_a_local_runs_commands_get_no_safe_path_from_neuroflow(tmp_path):
    """PYTHONSAFEPATH is for the Snakemake a SLURM job starts (environment.py); a local run's
    jobs run in the main process, so neither the step runner nor its tool gets it."""
    probe = (
        "import os; runner = open('/proc/%d/environ' % os.getppid(), 'rb').read().split(bytes(1));"
        " print('SAFEPATH runner', b'PYTHONSAFEPATH=1' in runner, 'tool', os.environ.get('PYTHONSAFEPATH'));"
        " raise SystemExit(1)"
    )
    study = study_with_qsiprep(tmp_path, probe, max_attempts=1)
    assert run(study).returncode != 0
    (record,) = read_records(study, "qsiprep_preprocess", {"subject": "01"})
    assert "SAFEPATH runner False tool None" in record.tail
