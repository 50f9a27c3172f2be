"""First attempts that fit and retries that resume, in REAL local runs of the workflow.

The example (real HeudiConv + dcm2niix and QSIParc, the QSIPrep/QSIRecon stand-ins) under
`neuroflow-recover run`, with a study config on top:

1. subject 01: QSIPrep's peak node (eddy) needs 300 MB (QSIPREP_STANDIN_MEM_MB) and gets
   200: it dies with MemoryError after 3 finished nodes; attempt 2 (400 MB) keeps the work
   directory and resumes (nipype's "Cached" lines), measures the 300 MB it held, and the
   work directory is removed after the success.
2. subject 02 added: QSIRecon's first attempt asks for what subject 01's QSIRecon used
   (min_history 1 here), not the configured 1000 MB; `resources` shows requested vs used.
3. subject 03 added with a QSIPrep that can never get enough memory: dead-lettered; the
   queue's history keeps what each attempt used, the work directory stays for a retry,
   and `purge` removes it once the dead letter is older than the retention.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_example, tool_env
from neuroflow_recover.step.attempts import read_records
from neuroflow_recover.step.learning import LearnSettings, learned_request, read_samples

pytestmark = pytest.mark.workflow

CONFIGS = ["--configfile", "example/config.yaml", "--configfile", "study.yaml"]
STUDY = """\
stages:
  qsiprep:
    resources: { mem_mb: 200, runtime: 10, threads: 1, disk_mb: 500 }
    growth: { mem_mb: 2.0, runtime: 2.0, threads: 1.0, disk_mb: 2.0 }
  qsirecon:
    floor: { mem_mb: 10, runtime: 1 }
    learn: { min_history: 1, mem_margin: 0.5 }
"""


def recover(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *CONFIGS, *args],
        capture_output=True, text=True, timeout=1500,
        env=tool_env(NEUROFLOW_DELAY_SCALE="0.01", **env),
    )  # fmt: skip


def sheet(root: Path, subjects: list[str]) -> None:
    rows = [f"{s}\t01\texample/data/dicom/sub-{s}/ses-01" for s in subjects]
    (root / "example/data/sessions.tsv").write_text(
        "participant_id\tsession_id\tdicom_dir\n" + "\n".join(rows) + "\n"
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = copy_example(tmp_path_factory.mktemp("learned") / "wf", subjects=3, sessions=1)
    (root / "study.yaml").write_text(STUDY)
    sheet(root, ["01"])
    return root


@pytest.fixture(scope="module")
def first(study) -> subprocess.CompletedProcess:
    return recover(study, "run", "--", "--cores", "2", QSIPREP_STANDIN_MEM_MB="300")


@pytest.fixture(scope="module")
def second(study, first) -> tuple[subprocess.CompletedProcess, int]:
    assert first.returncode == 0, first.stderr[-4000:]
    settings = LearnSettings(min_history=1, mem_margin=0.5)
    learned = learned_request(read_samples(study, "qsirecon"), settings, 1,
                              {"mem_mb": 10, "runtime": 1}, {"mem_mb": 64000, "runtime": 2880})  # fmt: skip
    sheet(study, ["01", "02"])
    return recover(study, "run", "--", "--cores", "2"), learned["mem_mb"]


@pytest.fixture(scope="module")
def third(study, second) -> subprocess.CompletedProcess:
    assert second[0].returncode == 0, second[0].stderr[-4000:]
    sheet(study, ["01", "02", "03"])
    return recover(study, "run", "--json", "--", "--cores", "2", QSIPREP_STANDIN_MEM_MB="100000")


def test_a_memory_retry_resumes_from_the_work_directory_and_removes_it_after(study, first):
    assert first.returncode == 0, first.stderr[-4000:]
    killed, resumed = read_records(study, "qsiprep_preprocess", {"subject": "01"})
    assert (killed.error_class, killed.resource) == ("ResourceError", "memory")
    assert resumed.succeeded and resumed.resumed and resumed.resources["mem_mb"] == 400
    assert resumed.peak_mem_mb >= 300 and resumed.usage_source == "process-tree"
    assert killed.elapsed_s > 0 and killed.cpu_s > 0
    log = (study / "example/results/logs/qsiprep_preprocess/sub-01.log").read_text()
    assert ("neuroflow: resuming qsiprep_preprocess attempt 2 in its work directory "
            "example/work/qsiprep/sub-01 (attempt 1 stopped for memory)") in log
    resumed_part = log[log.index("neuroflow: resuming"):]
    for node in ("anat_preproc_wf.skullstrip", "anat_preproc_wf.anat_normalization",
                 "dwi_preproc_wf.pre_hmc_wf.dwi_denoise"):  # fmt: skip
        assert f'[Node] Cached "qsiprep_1_0_wf.sub_01_wf.{node}"' in resumed_part
    assert resumed_part.count("[Node] Cached") == 3
    assert '[Node] Executing "eddy"' in resumed_part
    assert "(peak memory" in log.splitlines()[-1]
    assert not (study / "example/work/qsiprep/sub-01").exists()
    # every stage's successful job is in its stage's usage summary
    assert {p.stem for p in (study / ".neuroflow/usage").glob("*.json")} == {
        "bids_conversion", "qsiprep", "qsirecon", "qsiparc"}


def test_the_next_first_attempt_asks_for_what_the_history_learned(study, second):
    result, learned_mb = second
    assert result.returncode == 0, result.stderr[-4000:]
    (record,) = read_records(study, "qsirecon_reconstruct", {"subject": "02", "session": "01"})
    assert record.attempt == 1 and record.succeeded
    assert record.resources["mem_mb"] == learned_mb != 1000  # 1000: example/config.yaml
    assert record.resources["runtime"] == 1  # the floor: the stand-in takes seconds
    (before,) = read_records(study, "qsirecon_reconstruct", {"subject": "01", "session": "01"})
    assert before.resources["mem_mb"] == 1000


def test_resources_reports_requested_vs_used_per_rule(study, second):
    shown = recover(study, "resources", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["rule"]: row for row in json.loads(shown.stdout)}
    assert list(rows) == ["heudiconv_convert", "qsiprep_preprocess", "qsirecon_reconstruct",
                          "qsiparc_parcellate"]  # fmt: skip
    prep = rows["qsiprep_preprocess"]
    assert (prep["jobs"], prep["attempts"], prep["succeeded"]) == (2, 3, 2)
    assert prep["failures"] == {"memory": 1}
    assert prep["requested_mem_mb"]["max"] == 400 and prep["used_mem_mb"]["max"] >= 300
    recon = rows["qsirecon_reconstruct"]
    assert recon["learned"] is True and recon["history"] == 2
    assert 0 < recon["cpu_efficiency"]["p50"]
    table = recover(study, "resources").stdout
    assert "qsiprep_preprocess (qsiprep): 2 jobs, 3 attempts, 2 jobs succeeded; failed attempts: memory 1" in table
    assert "  suggested     mem_mb" in table
    out = recover(study, "resources", "--format", "csv", "--output", str(study / "usage.csv"))
    assert out.returncode == 0 and out.stdout == ""
    rows_csv = list(csv.DictReader(io.StringIO((study / "usage.csv").read_text())))
    assert [r["rule"] for r in rows_csv] == list(rows)
    assert rows_csv[1]["failed_memory"] == "1" and rows_csv[2]["learned"] == "True"


def test_a_dead_letter_keeps_what_each_attempt_used_and_purge_frees_its_work(study, third):
    assert third.returncode == 1, third.stderr[-4000:]
    (entry_id,) = json.loads(third.stdout)["dead_lettered"]
    shown = json.loads(recover(study, "show", str(entry_id), "--json").stdout)
    assert shown["rule"] == "qsiprep_preprocess" and shown["resource"] == "memory"
    used = [(h["resources"]["mem_mb"], h["usage_source"]) for h in shown["history"]]
    assert used == [(200, "process-tree"), (400, "process-tree"), (800, "process-tree")]
    assert all(h["peak_mem_mb"] > 0 and h["elapsed_s"] > 0 for h in shown["history"])
    assert "        used:      peak " in recover(study, "show", str(entry_id)).stdout
    work = study / "example/work/qsiprep/sub-03"
    assert (work / "qsiprep_1_0_wf").is_dir()  # kept: a retry with more memory resumes
    dry = recover(study, "purge", "--older-than", "0", "--dry-run", "--json")
    assert json.loads(dry.stdout)["work_dirs"] == ["example/work/qsiprep/sub-03"]
    assert work.exists()
    purged = recover(study, "purge", "--older-than", "0")
    assert purged.returncode == 0, purged.stderr
    assert "1 work director(y/ies) of old dead letters" in purged.stdout
    assert not work.exists()
