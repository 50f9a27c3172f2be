"""A configuration error on the real (local) SLURM cluster: dead-lettered fast, fixed, retried.

`neuroflow-recover run --profile profiles/slurm` on a copy of the workflow and the example
(1 subject x 1 session), with one test config file on top whose QSIRecon
`container.command` has a typo (a path that does not exist): the step runner cannot start
the tool (exit 127, `neuroflow: cannot start ...`), a ConfigurationError. Snakemake's main
process resubmits the job (max_attempts 2 here), but the step runner of attempt 2 does not
start the tool again (fail-fast, exit 3), so every later attempt ends within seconds
instead of retrying into hours; the dead-letter queue holds exactly that job with its SLURM
job ids, state and evidence. Then the config file is fixed and a plain `retry ID` (the
config changed, so the non-retryable entry may run) re-runs it through SLURM with the
stored invocation (profile included) and resolves it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import probe
from helpers import copy_example
from neuroflow_recover.step.attempts import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CONFIGS = ["--configfile", "example/config.yaml", "--configfile", "stage.yaml"]
WILDCARDS = {"subject": "01", "session": "01"}
RULE = "qsirecon_reconstruct"

# max_attempts 2 (shipped: 3) only keeps the test short: each resubmission costs a few
# growing status intervals of the plugin; attempt 2 shows the fail-fast all the same
ATTEMPTS = """\
error_handling:
  pipelines:
    qsirecon: { max_attempts: 2 }
"""
BROKEN = """\
stages:
  qsirecon:
    container:
      command: example/standins/qsirecon_standn.py  # typo: no such file
""" + ATTEMPTS
FIXED = """\
stages:
  qsirecon:
    container:
      command: example/standins/qsirecon_standin.py
""" + ATTEMPTS


def cli(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(workdir), *CONFIGS, *args],
        capture_output=True, text=True, timeout=timeout, env=probe.cli_env(),
    )  # fmt: skip


def submitted(text: str, rule: str) -> list[str]:
    return re.findall(rf"SLURM jobid (\d+) \(log: \S*/rule_{rule}/", text)


@pytest.fixture(scope="module")
def example(tmp_path_factory, cluster) -> Path:
    root = tmp_path_factory.mktemp("slurm_recovery") / "wf"
    copy_example(root, subjects=1, sessions=1)
    (root / "stage.yaml").write_text(BROKEN)
    return root


@pytest.fixture(scope="module")
def failed_run(example) -> subprocess.CompletedProcess:
    return cli(example, "run", "--profile", "profiles/slurm", "--", *probe.STATUS_OVERRIDES)


@pytest.fixture(scope="module")
def entry(example, failed_run) -> dict:
    listed = cli(example, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert len(entries) == 1, entries
    shown = cli(example, "show", str(entries[0]["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_configuration_error_is_dead_lettered_without_retrying_the_tool(example, failed_run, entry):
    assert failed_run.returncode == 1, failed_run.stderr[-4000:]
    assert entry["rule"] == RULE and entry["pipeline"] == "qsirecon"
    assert entry["error_type"] == "ConfigurationError"
    assert entry["retryable"] is False and entry["resolved"] is False
    assert "cannot start" in entry["evidence"] and "qsirecon_standn.py" in entry["evidence"]
    # every SLURM job of the job (attempt 1 + the resubmissions) is on the entry
    jobs = submitted(failed_run.stderr, RULE)
    assert len(jobs) == 2, failed_run.stderr[-4000:]  # max_attempts 2
    assert sorted(entry["slurm_job_ids"]) == sorted(jobs)
    assert entry["slurm_state"] == "FAILED"
    assert entry["invocation"]["profile"] == "profiles/slurm"
    # the tool ran once; attempt 2 was not started (fail-fast) and took seconds
    records = read_records(example, RULE, WILDCARDS)
    assert [r.attempt for r in records] == [1, 2]
    first, *later = records
    assert first.exit_code == 127 and first.error_class == "ConfigurationError"
    assert not first.skipped
    for record in later:
        assert record.skipped and record.exit_code == 3
        assert record.error_class == "ConfigurationError"
        seconds = (
            datetime.fromisoformat(record.ended_at) - datetime.fromisoformat(record.started_at)
        ).total_seconds()
        assert seconds < 30, record
    assert {r.slurm_job_id for r in records} == set(jobs)
    # SLURM's view: every attempt FAILED quickly (no allocation held for long)
    rows = probe.sacct(jobs)
    assert {r.state for r in rows} == {"FAILED"}, rows
    # the rest of the workflow up to QSIRecon ran on SLURM
    assert len(submitted(failed_run.stderr, "heudiconv_convert")) == 1
    assert len(submitted(failed_run.stderr, "qsiprep_preprocess")) == 1


def test_fixed_configuration_is_retried_through_slurm_and_resolved(example, entry):
    (example / "stage.yaml").write_text(FIXED)
    retried = cli(example, "retry", str(entry["id"]), "--json")
    assert retried.returncode == 0, retried.stdout + retried.stderr[-4000:]
    outcome = json.loads(retried.stdout)
    assert outcome["resolved"] == [entry["id"]]
    assert "--profile profiles/slurm" in outcome["command"]
    new_jobs = submitted(retried.stderr, RULE)
    assert len(new_jobs) == 1 and new_jobs[0] not in entry["slurm_job_ids"]
    assert len(submitted(retried.stderr, "qsiparc_parcellate")) == 1  # downstream too
    shown = json.loads(cli(example, "show", str(entry["id"]), "--json").stdout)
    assert shown["resolved"] is True and shown["resolved_by"] == "retry"
    final = read_records(example, RULE, WILDCARDS)[-1]
    assert final.succeeded and final.slurm_job_id == new_jobs[0]
    diffmaps = list((example / "example/results/derivatives/qsiparc").rglob("*_diffmap.tsv"))
    assert diffmaps
