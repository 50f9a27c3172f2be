"""The SLURM executor plugin on a real (local) SLURM cluster: what neuroflow relies on.

Runs the probe workflow (tests/slurm/probe/Snakefile) scenarios concurrently, once per
module (~5 minutes of wall time, dominated by the time-limit resubmission), then checks the
job states, the log lines the classifier needs and that a retry is a RESUBMISSION with the
next attempt's resources (seen in sacct). Needs the cluster: `bash tests/slurm/run.sh`
starts it and runs `pytest -m slurm`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import probe

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SCENARIOS = [
    "complete",
    "fail",
    "oom",
    "timeout",
    "resubmit_mem",
    "resubmit_time",
    "retry_in_allocation",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cluster) -> dict[str, probe.ProbeRun]:
    return probe.run_scenarios(SCENARIOS, tmp_path_factory.mktemp("probe"), timeout=540)


def slurm_log(run: probe.ProbeRun, slurm_id: str) -> str:
    for _, sid, path in run.submissions:
        if sid == slurm_id:
            return Path(path).read_text(errors="replace")
    raise AssertionError(f"SLURM job {slurm_id} was not submitted by {run.scenario.name}")


def main_log(run: probe.ProbeRun) -> str:
    return run.main_log.read_text(errors="replace")


def states(run: probe.ProbeRun) -> list[probe.SacctRow]:
    rows = probe.sacct(run.slurm_ids)
    assert [r.job_id for r in rows] == run.slurm_ids, (rows, run.output[-3000:])
    return rows


def test_completed_job(runs):
    run = runs["complete"]
    assert run.returncode == 0, run.output[-3000:]
    assert (run.workdir / "results/01/1/probe_complete.txt").read_text() == "ok\n"
    assert [r.state for r in states(run)] == ["COMPLETED"]
    assert "Finished jobid: 0 (Rule: probe_complete)" in main_log(run)
    # the plugin deletes the SLURM log of a successful job (keep-successful-logs: false)
    assert not Path(run.submissions[0][2]).exists()


def test_failed_job_message_only_in_slurm_and_rule_logs(runs):
    run = runs["fail"]
    assert run.returncode != 0
    (row,) = states(run)
    assert row.state == "FAILED"
    text = main_log(run)
    assert f"SLURM-job '{row.job_id}' failed, SLURM status is: 'FAILED'" in text
    assert f"external_jobid: {row.job_id}" in text
    # the tool's stderr never reaches the main log under SLURM (only the command line does)
    assert not any(line.startswith("probe: ERROR") for line in text.splitlines())
    log = slurm_log(run, row.job_id)
    assert "probe: ERROR: input volume sub-01 is corrupt" in log
    assert "srun: error: localhost: task 0: Exited with exit code 1" in log
    assert "probe: is_main_process=False" in log


def test_memory_kill_is_failed_with_evidence_in_slurm_log(runs):
    run = runs["oom"]
    assert run.returncode != 0
    (row,) = states(run)
    assert row.state == "FAILED"  # OverMemoryKill without cgroups: not OUT_OF_MEMORY
    assert row.req_mem == "300M"
    assert "SLURM status is: 'FAILED'" in main_log(run)
    log = slurm_log(run, row.job_id)
    assert "exceeded memory limit" in log
    assert "Exceeded job memory limit" in log


def test_time_limit_is_timeout(runs):
    run = runs["timeout"]
    assert run.returncode != 0
    (row,) = states(run)
    assert (row.state, row.timelimit) == ("TIMEOUT", "00:01:00")
    assert "SLURM status is: 'TIMEOUT'" in main_log(run)
    assert f"*** JOB {row.job_id} ON localhost CANCELLED AT" in slurm_log(run, row.job_id)
    assert "DUE TO TIME LIMIT ***" in slurm_log(run, row.job_id)


def test_memory_retry_is_a_resubmission_with_more_memory(runs):
    run = runs["resubmit_mem"]
    assert run.returncode == 0, run.output[-3000:]
    first, second = states(run)
    assert (first.state, first.req_mem) == ("FAILED", "300M")
    assert (second.state, second.req_mem) == ("COMPLETED", "900M")
    assert first.timelimit == second.timelimit == "00:02:00"
    text = main_log(run)
    assert "Trying to restart job 0." in text
    assert "mem_mb=900" in text and "attempt=2" in text
    # inside the SLURM job the rule is NOT retried: workflow.is_main_process is False there
    log = slurm_log(run, first.job_id)
    assert "probe: is_main_process=False" in log
    assert "Trying to restart job" not in log
    assert "exceeded memory limit" in log


def test_time_limit_retry_gets_more_runtime_same_memory(runs):
    run = runs["resubmit_time"]
    assert run.returncode == 0, run.output[-3000:]
    first, second = states(run)
    assert (first.state, first.timelimit) == ("TIMEOUT", "00:01:00")
    assert (second.state, second.timelimit) == ("COMPLETED", "00:03:00")
    assert first.req_mem == second.req_mem == "500M"
    assert "Trying to restart job 0." in main_log(run)
    assert "Trying to restart job" not in slurm_log(run, first.job_id)


def test_unconditional_rule_retries_also_run_inside_the_allocation(runs):
    """The upstream trap (snakemake-executor-plugin-slurm#284) that neuroflow's
    `retries: N if workflow.is_main_process else 0` avoids. If this starts failing, the
    plugin changed: re-check docs/snakemake-notes.md."""
    run = runs["retry_in_allocation"]
    assert run.returncode != 0
    first, second = states(run)
    assert first.state == second.state == "FAILED"
    log = slurm_log(run, first.job_id)
    assert "Trying to restart job 0." in log
    assert "probe: attempt 1 fails" in log and "probe: attempt 2 fails" in log
    assert first.req_mem == second.req_mem  # the in-allocation retry got no more memory
