"""The example workflow on the real (local) SLURM cluster, with the user's profile.

`neuroflow-recover run --profile profiles/slurm` on a copy of the workflow and the example
(real HeudiConv + dcm2niix and QSIParc, the QSIPrep/QSIRecon stand-ins). Only test
overrides are layered on top of profiles/slurm: the partition and account through the
profile's own environment variables (NEUROFLOW_SLURM_PARTITION/_ACCOUNT) and short status
checks as command-line flags (they win over the profile's values).

Run 1 (subject 01, two sessions):

* QSIPrep's nodes take 15 s each (6 nodes: 90 s) under a 1-minute limit: SLURM ends it
  with TIMEOUT, the retry (2 minutes) keeps the work directory and resumes: its log shows
  the cached nodes, it takes less than the killed attempt, and the work directory is gone
  after the success.
* QSIRecon really needs ~600 MB (a wrapper touches 600 MB, then runs the stand-in) while
  the config gives it 400 MB: SLURM kills both QSIRecon jobs for memory; the retry's
  memory grows to 800 MB and is raised to 1024 MB, the free share of 1 CPU under the
  cluster's billing (TRESBillingWeights CPU=1.0,Mem=1.0G with MAX_TRES, read by scontrol):
  SLURM bills it as 1 CPU. Nothing is dead-lettered.

Run 2 (subject 02 added to the sheet): QSIRecon's history (2 successful jobs, min_history
2 here) sets its first attempt: the learned memory is what sacct shows, and the job that
the old 400 MB would have killed succeeds at attempt 1. `neuroflow-recover resources`
shows requested vs used per rule, the memory kills included.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import probe
from helpers import copy_example
from neuroflow_recover.step.accounting import parse_mem_mb
from neuroflow_recover.step.attempts import read_records
from neuroflow_recover.step.billing import billing_model
from neuroflow_recover.step.learning import LearnSettings, learned_request, read_samples

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CONFIGS = ["--configfile", "example/config.yaml", "--configfile", "hungry.yaml"]
NODE_SECONDS = 15  # QSIPrep stand-in: 6 nodes x 15 s = 90 s of work, limit 1 minute

HUNGRY_QSIRECON = """\
#!/usr/bin/env python3
# test wrapper: a QSIRecon that needs ~600 MB (touches every page), then the stand-in
import os
import sys
import time
from pathlib import Path

block = bytearray(600 * 2**20)
block[::4096] = b"x" * len(block[::4096])
print("hungry qsirecon: holding 600 MB", flush=True)
def proc(pid, name):
    return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\\0")
def parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
snakemake = os.getppid()  # the job's Snakemake that runs this command: the nearest `-m snakemake`
while b"-m\\0snakemake" not in b"\\0".join(proc(snakemake, "cmdline")) and snakemake > 1:
    snakemake = parent(snakemake)
print("hungry qsirecon: PYTHONSAFEPATH job's snakemake",
      b"PYTHONSAFEPATH=1" in proc(snakemake, "environ"),
      "step runner", b"PYTHONSAFEPATH=1" in proc(os.getppid(), "environ"),
      "tool", os.environ.get("PYTHONSAFEPATH"), flush=True)
time.sleep(8)
del block
standin = Path(__file__).resolve().parent / "example" / "standins" / "qsirecon_standin.py"
os.execv(sys.executable, [sys.executable, str(standin), *sys.argv[1:]])
"""

HUNGRY_CONFIG = """\
stages:
  qsiprep:
    resources: { mem_mb: 1000, runtime: 1, threads: 1, disk_mb: 500 }
    growth: { mem_mb: 2.0, runtime: 2.0, threads: 1.0, disk_mb: 2.0 }
  qsirecon:
    container:
      command: ./hungry_qsirecon.py
    resources: { mem_mb: 400, runtime: 10, threads: 1, disk_mb: 500 }
    growth: { mem_mb: 2.0, runtime: 2.0, threads: 1.0, disk_mb: 2.0 }
    floor: { mem_mb: 100, runtime: 5 }
    learn: { min_history: 2, mem_margin: 0.25 }
"""


def cli(root: Path, *args: str, env: dict | None = None, timeout: float = 900):
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *CONFIGS, *args],
        capture_output=True, text=True, timeout=timeout, env={**probe.cli_env(), **(env or {})},
    )  # fmt: skip


def sheet_rows(root: Path, rows: list[tuple[str, str]]) -> None:
    lines = ["participant_id\tsession_id\tdicom_dir"] + [
        f"{sub}\t{ses}\texample/data/dicom/sub-{sub}/ses-{ses}" for sub, ses in rows
    ]
    (root / "example/data/sessions.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def example(tmp_path_factory, cluster) -> Path:
    root = tmp_path_factory.mktemp("slurm_example") / "wf"
    copy_example(root, subjects=2, sessions=2)
    sheet_rows(root, [("01", "01"), ("01", "02")])
    wrapper = root / "hungry_qsirecon.py"
    wrapper.write_text(HUNGRY_QSIRECON)
    wrapper.chmod(0o755)
    (root / "hungry.yaml").write_text(HUNGRY_CONFIG)
    return root


def run(root: Path, **env: str) -> subprocess.CompletedProcess:
    return cli(root, "run", "--profile", "profiles/slurm", "--", *probe.STATUS_OVERRIDES, env=env)


@pytest.fixture(scope="module")
def slurm_run(example) -> subprocess.CompletedProcess:
    return run(example, QSIPREP_STANDIN_STEP_SECONDS=str(NODE_SECONDS))


def submissions(text: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, in submission order (from the plugin's submission lines)."""
    out: dict[str, list[str]] = {}
    for slurm_id, rule in re.findall(r"SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", text):
        out.setdefault(rule, []).append(slurm_id)
    return out


def alloc_billing(slurm_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", slurm_id, "-o", "AllocTRES"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return dict(item.split("=", 1) for item in out.strip().split(",") if "=" in item)["billing"]


def test_example_completes_on_slurm_with_the_user_profile(example, slurm_run):
    assert slurm_run.returncode == 0, slurm_run.stdout + slurm_run.stderr[-4000:]
    assert slurm_run.stdout.splitlines()[-1] == "dead-lettered entries: none"
    diffmaps = sorted((example / "example/results/derivatives/qsiparc").rglob("*_diffmap.tsv"))
    assert {p.name.split("_")[1] for p in diffmaps} == {"ses-01", "ses-02"}
    jobs = submissions(slurm_run.stderr)
    # every stage ran as SLURM jobs: per session, per subject, per session, per session
    assert len(jobs["heudiconv_convert"]) == 2
    assert len(jobs["qsiparc_parcellate"]) == 2
    ids = [i for rule_ids in jobs.values() for i in rule_ids]
    rows = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,Partition,Account"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert {tuple(r.split("|")[1:]) for r in rows} == {(probe.PARTITION, "root")}


def test_a_jobs_snakemake_starts_with_the_safe_path_and_its_tool_without(example, slurm_run):
    """The main process sets PYTHONSAFEPATH for its jobs' own Snakemake (environment.py): it
    reaches, through SLURM and the batch script's Snakemake, the Snakemake that runs the job's
    command (it started with it), which takes it out: the step runner and the tool lack it."""
    assert slurm_run.returncode == 0, slurm_run.stderr[-4000:]
    logs = sorted((example / "example/results/logs/qsirecon_reconstruct").glob("sub-01*"))
    assert len(logs) == 2
    expected = "PYTHONSAFEPATH job's snakemake True step runner False tool None"
    for log in logs:
        assert f"hungry qsirecon: {expected}" in log.read_text()


def test_the_billing_model_is_read_from_the_cluster(example):
    model = billing_model({"billing": {"model": "auto", "raise_memory": "retries"}}, on_slurm=True)
    assert (model.model, model.mem_per_cpu_mb) == ("max_tres", 1024), model
    assert model.free_mem_mb(1) == 1024


def test_memory_kills_are_resubmitted_with_the_memory_billing_gives_free(example, slurm_run):
    assert slurm_run.returncode == 0, slurm_run.stderr[-4000:]
    recon = submissions(slurm_run.stderr)["qsirecon_reconstruct"]
    assert len(recon) == 4  # two sessions, killed once each, resubmitted once each
    rows = {r.job_id: r for r in probe.sacct(recon)}
    # grown 400 -> 800 by the config's factor, raised to the 1024 MB one CPU gets free
    assert sorted(parse_mem_mb(r.req_mem) for r in rows.values()) == [400, 400, 1024, 1024]
    killed = [i for i in recon if rows[i].state == "FAILED"]
    assert len(killed) == 2 and all(rows[i].req_mem == "400M" for i in killed)
    retried = [i for i in recon if i not in killed]
    assert all(rows[i].state == "COMPLETED" for i in retried)
    assert [alloc_billing(i) for i in retried] == ["1", "1"]  # billed as its one CPU
    for slurm_id in killed:
        (log,) = (example / ".snakemake/slurm_logs/rule_qsirecon_reconstruct").rglob(
            f"{slurm_id}.log"
        )
        assert "exceeded memory limit" in log.read_text()
    for session in ("01", "02"):
        records = read_records(
            example, "qsirecon_reconstruct", {"subject": "01", "session": session}
        )
        final = records[-1]
        assert final.attempt == 2 and final.succeeded
        assert final.resources["mem_mb"] == 1024
        # what the attempt used: the tool's tree, or the SLURM step's MaxRSS when larger
        assert final.peak_mem_mb > 600 and final.elapsed_s > 8 and final.cpu_s > 0


def test_a_timed_out_qsiprep_resumes_from_its_work_directory(example, slurm_run):
    assert slurm_run.returncode == 0, slurm_run.stderr[-4000:]
    prep = submissions(slurm_run.stderr)["qsiprep_preprocess"]
    first, second = probe.sacct(prep)
    assert (first.state, first.timelimit) == ("TIMEOUT", "00:01:00")
    assert (second.state, second.timelimit) == ("COMPLETED", "00:02:00")
    killed, resumed = read_records(example, "qsiprep_preprocess", {"subject": "01"})
    assert (killed.error_class, killed.resource) == ("ResourceError", "runtime")
    assert resumed.succeeded and resumed.resumed and not killed.resumed
    log = (example / "example/results/logs/qsiprep_preprocess/sub-01.log").read_text()
    assert "neuroflow: resuming qsiprep_preprocess attempt 2 in its work directory" in log
    cached = log.count('[Node] Cached "qsiprep_1_0_wf.sub_01_wf.')
    assert 1 <= cached < 6, log
    # a fresh run needs 6 nodes x 15 s, more than the 60 s the killed attempt had
    assert resumed.elapsed_s < killed.elapsed_s < 6 * NODE_SECONDS
    assert not (example / "example/work/qsiprep/sub-01").exists()  # removed after success


@pytest.fixture(scope="module")
def learned_run(example, slurm_run) -> tuple[subprocess.CompletedProcess, int]:
    """Run 2: subject 02 added; returns the run and the memory QSIRecon's history gives."""
    assert slurm_run.returncode == 0, slurm_run.stderr[-4000:]
    samples = read_samples(example, "qsirecon")
    assert len(samples) == 2 and all(s.peak_mem_mb > 600 for s in samples), samples
    settings = LearnSettings(min_history=2, mem_margin=0.25)
    learned = learned_request(samples, settings, 1, {"mem_mb": 100, "runtime": 5},
                              {"mem_mb": 32000, "runtime": 480})  # fmt: skip
    sheet_rows(example, [("01", "01"), ("01", "02"), ("02", "01")])
    return run(example), learned["mem_mb"]


def test_first_attempts_after_a_batch_request_the_learned_memory(example, learned_run):
    second_run, learned_mb = learned_run
    assert second_run.returncode == 0, second_run.stderr[-4000:]
    assert 600 < learned_mb < 1024
    (job,) = submissions(second_run.stderr)["qsirecon_reconstruct"]  # no retry
    (row,) = probe.sacct([job])
    assert (row.state, parse_mem_mb(row.req_mem)) == ("COMPLETED", learned_mb)
    (record,) = read_records(example, "qsirecon_reconstruct", {"subject": "02", "session": "01"})
    assert record.attempt == 1 and record.succeeded
    assert record.resources["mem_mb"] == learned_mb
    assert record.peak_mem_mb > 400  # the config's 400 MB would have been killed


def test_resources_shows_requested_vs_used_per_rule(example, learned_run):
    shown = cli(example, "resources", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["rule"]: row for row in json.loads(shown.stdout)}
    recon = rows["qsirecon_reconstruct"]
    assert (recon["jobs"], recon["succeeded"]) == (3, 3)
    assert recon["failures"] == {"memory": 2}  # the killed attempts left SLURM logs only
    assert recon["requested_mem_mb"]["max"] == 1024 and recon["requested_mem_mb"]["p50"] >= 400
    assert recon["used_mem_mb"]["p50"] > 600
    assert recon["learned"] is True and recon["suggested"]["mem_mb"] > 600
    assert rows["qsiprep_preprocess"]["failures"] == {"runtime": 1}
    text = cli(example, "resources").stdout
    assert "qsirecon_reconstruct (qsirecon): 3 jobs" in text
