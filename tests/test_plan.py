"""The daily run's pending-only plan gives exactly the jobs of a full plan.

A generated study of 3 subjects x 2 sessions with every output in place (stage by stage,
older to newer) and a recorded last run; for each change a brain bank meets, `snakemake -n`
with the whole sheet (the full plan) and with the sheet of the subjects neuroflow found
pending list the same jobs. Where neuroflow cannot tell cheaply, it plans in full and says
why (then both are the full plan by definition).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from helpers import REPO, tool_env
from neuroflow_recover import environment
from neuroflow_recover.recover.plan import make_plan, record_state
from neuroflow_recover.workflow.config import load_config
from neuroflow_recover.workflow.layout import Layout
from neuroflow_recover.workflow.sheet import load_sessions
from workflow_study import jobs, make_study, snakemake, write_sheet

pytestmark = pytest.mark.workflow

TRIGGERS = ["--rerun-triggers", "mtime", "input"]
T0 = 1_700_000_000  # outputs' times: each stage newer than the one before


def _touch(path: str, moment: float) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("x")
    os.utime(path, (moment, moment))


def place_outputs(root: Path) -> None:
    """Every declared output, in place and up to date, as after a finished run."""
    cfg = load_config(root, ["config.yaml"])
    layout = Layout.from_config(cfg).within(root)
    _touch(layout.dataset_description, T0)
    for s in load_sessions(root / "sessions.tsv"):
        for rule, offset in (("heudiconv_convert", 10), ("qsirecon_reconstruct", 30),
                             ("qsiparc_parcellate", 40)):  # fmt: skip
            for path in layout.rule_outputs(rule, s.wildcards):
                _touch(path, T0 + offset)
        _touch(layout.qsiprep_report(s.subject), T0 + 20)


@pytest.fixture
def study(tmp_path) -> Path:
    workflow = tmp_path / "workflow"
    shutil.copytree(REPO / "workflow", workflow, ignore=shutil.ignore_patterns("__pycache__"))
    root = make_study(tmp_path / "study", 3, 2)
    place_outputs(root)
    _record(root, workflow)
    return root


def _record(root: Path, workflow: Path) -> None:
    cfg = load_config(root, ["config.yaml"])
    record_state(root, cfg, load_sessions(root / "sessions.tsv"), workflow)


def planned_jobs(root: Path, *env: tuple[str, str]) -> list[tuple]:
    result = snakemake(root, "-n", "--snakefile", str(root.parent / "workflow" / "Snakefile"),
                       *TRIGGERS, env_extra=dict(env))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted((j["rule"], tuple(sorted(j["wildcards"].items()))) for j in jobs(result.stdout))


def compare(root: Path, expect_full: str | None = None) -> tuple[list, object]:
    """The full plan's jobs; asserts the pending-only plan gives the same (or that neuroflow
    plans in full, for the reason `expect_full`)."""
    cfg = load_config(root, ["config.yaml"])
    plan = make_plan(root, cfg, load_sessions(root / "sessions.tsv"), root.parent / "workflow",
                     [], {"mtime", "input"})  # fmt: skip
    full = planned_jobs(root)
    if expect_full is not None:
        assert plan.full and expect_full in plan.reason, plan.reason
        return full, plan
    assert not plan.full, plan.reason
    if not plan.subjects:  # `run` starts no Snakemake at all
        assert full == []
        return full, plan
    pending = planned_jobs(root, (environment.PLAN_SHEET, str(plan.sheet)))
    assert pending == full
    return full, plan


def test_nothing_pending_when_everything_is_done(study):
    full, plan = compare(study)
    assert full == [] and plan.subjects == []


def test_a_new_session_of_an_existing_subject(study):
    pairs = [(s, e) for s in ("01", "02", "03") for e in ("01", "02")] + [("02", "03")]
    (study / "dicom" / "sub-02" / "ses-03").mkdir(parents=True)
    write_sheet(study, pairs)
    full, plan = compare(study)
    assert plan.subjects == ["02"]
    assert ("qsiparc_parcellate", (("session", "03"), ("subject", "02"))) in full


def test_a_new_subject(study):
    pairs = [(s, e) for s in ("01", "02", "03") for e in ("01", "02")] + [("04", "01")]
    (study / "dicom" / "sub-04" / "ses-01").mkdir(parents=True)
    write_sheet(study, pairs)
    full, plan = compare(study)
    assert plan.subjects == ["04"] and len(full) == 5  # 4 stages + rule all


def test_a_deleted_final_output(study):
    cfg = load_config(study, ["config.yaml"])
    Path(Layout.from_config(cfg).within(study).qsiparc_diffmaps("03", "02")[0]).unlink()
    full, plan = compare(study)
    assert plan.subjects == ["03"]
    assert [rule for rule, _ in full] == ["all", "qsiparc_parcellate"]


def test_a_deleted_intermediate_output(study):
    cfg = load_config(study, ["config.yaml"])
    Path(Layout.from_config(cfg).within(study).qsirecon_scalar_maps("01", "01")[1]).unlink()
    full, plan = compare(study)
    # Snakemake leaves a missing intermediate alone while what depends on it is up to date;
    # neuroflow hands the subject over all the same (it never decides for Snakemake)
    assert plan.subjects == ["01"] and full == []


def test_a_touched_upstream_file(study):
    cfg = load_config(study, ["config.yaml"])
    report = Layout.from_config(cfg).within(study).qsiprep_report("02")
    os.utime(report, (T0 + 1000, T0 + 1000))  # newer than QSIRecon's outputs of sub-02
    full, plan = compare(study)
    assert plan.subjects == ["02"]
    assert {rule for rule, _ in full} == {"all", "qsirecon_reconstruct", "qsiparc_parcellate"}


def test_an_open_dead_letter_entry_being_retried(study):
    """QSIPrep of sub-01 failed: its outputs and everything after it are missing."""
    layout = Layout.from_config(load_config(study, ["config.yaml"])).within(study)
    Path(layout.qsiprep_report("01")).unlink()
    for session in ("01", "02"):
        for rule in ("qsirecon_reconstruct", "qsiparc_parcellate"):
            for path in layout.rule_outputs(rule, {"subject": "01", "session": session}):
                Path(path).unlink()
    full, plan = compare(study)
    assert plan.subjects == ["01"] and ("qsiprep_preprocess", (("subject", "01"),)) in full


def test_a_changed_stage_setting_plans_in_full(study):
    cfg = yaml.safe_load((study / "config.yaml").read_text())
    cfg.setdefault("stages", {}).setdefault("qsirecon", {})["atlases"] = [
        "4S156Parcels", "Schaefer100"]  # fmt: skip
    (study / "config.yaml").write_text(yaml.safe_dump(cfg))
    full, _ = compare(study, expect_full="config")
    assert len([j for j in full if j[0] == "qsiparc_parcellate"]) == 6  # every session


def test_a_changed_dicom_dir_plans_in_full(study):
    text = (study / "sessions.tsv").read_text().replace("dicom/sub-03/ses-01", "dicom/sub-03/x")
    (study / "dicom" / "sub-03" / "x").mkdir(parents=True)
    (study / "sessions.tsv").write_text(text)
    compare(study, expect_full="sheet rows changed")


def test_a_changed_rule_file_plans_in_full(study):
    rule_file = study.parent / "workflow" / "rules" / "qsiparc.smk"
    rule_file.write_text(rule_file.read_text() + "\n# edited\n")
    compare(study, expect_full="workflow")


def test_options_that_select_jobs_and_other_triggers_plan_in_full(study):
    cfg = load_config(study, ["config.yaml"])
    sessions = load_sessions(study / "sessions.tsv")
    workflow = study.parent / "workflow"
    forced = make_plan(study, cfg, sessions, workflow, ["-R", "qsiparc_parcellate"],
                       {"mtime", "input"})  # fmt: skip
    assert forced.full and "-R" in forced.reason
    code = make_plan(study, cfg, sessions, workflow, [], {"mtime", "code"})
    assert code.full and "re-run triggers" in code.reason
    assert make_plan(study, cfg, sessions, workflow, [], None).full


def test_run_starts_no_snakemake_when_nothing_is_pending(study):
    result = subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(study), "--configfile",
         "config.yaml", "run", "--", "--snakefile", str(study.parent / "workflow" / "Snakefile"),
         "--rerun-triggers", "mtime", "input"],
        capture_output=True, text=True, timeout=600, env=tool_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == "plan: pending only (0 of 3 subjects have work)"
    assert "round 1" not in result.stdout
    assert not (study / ".snakemake" / "log").exists()  # Snakemake never started


def _subjects_01_and_03_with_work(study: Path) -> Callable[[], list[str]]:
    """Subject 03 lost a final output, 01's QSIPrep report is newer than what follows it;
    returns the pending-only plan's subjects."""
    cfg = load_config(study, ["config.yaml"])
    layout = Layout.from_config(cfg).within(study)
    Path(layout.qsiparc_diffmaps("03", "02")[0]).unlink()
    os.utime(layout.qsiprep_report("01"), (T0 + 1000, T0 + 1000))
    return lambda: make_plan(study, cfg, load_sessions(study / "sessions.tsv"),
                             study.parent / "workflow", [], {"mtime", "input"}).subjects  # fmt: skip


def test_threads_for_a_slow_file_system_find_the_same_subjects_in_sheet_order(study, monkeypatch):
    from neuroflow_recover.recover import plan as plan_module

    subjects = _subjects_01_and_03_with_work(study)
    assert subjects() == ["01", "03"]
    # one subject per task, and every first chunk counts as slow: the threaded path
    monkeypatch.setattr(plan_module, "SUBJECTS_PER_TASK", 1)
    monkeypatch.setattr(plan_module, "SLOW_CHUNK_SECONDS", -1.0)
    assert subjects() == ["01", "03"]


@pytest.mark.parametrize("slow, threaded", [(None, None), (0, ["02", "03"]), (1, ["03"]), (2, [])])
def test_threads_state_the_chunks_after_the_first_slow_one(study, monkeypatch, slow, threaded):
    """One subject per chunk; chunk `slow` takes 1 s by the plan's clock: the chunks after it
    go to the threads (`threaded`), the result is the serial one."""
    from neuroflow_recover.recover import plan as plan_module

    subjects = _subjects_01_and_03_with_work(study)
    readings = iter(range(100))  # two per chunk: its start and its end

    def clock() -> float:
        reading = next(readings)
        return 1.0 if slow is not None and reading == 2 * slow + 1 else 0.0

    pooled = []  # [subjects of the chunks handed to the threads] per pool

    class Pool(plan_module.ThreadPoolExecutor):
        def map(self, fn, chunks):
            pooled.append([subject for chunk in chunks for subject, _ in chunk])
            return super().map(fn, chunks)

    monkeypatch.setattr(plan_module, "SUBJECTS_PER_TASK", 1)
    monkeypatch.setattr(plan_module, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(plan_module, "ThreadPoolExecutor", Pool)
    assert (subjects(), pooled) == (["01", "03"], [] if threaded is None else [threaded])
