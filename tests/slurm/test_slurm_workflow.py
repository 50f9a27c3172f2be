"""The example workflow on the real (local) SLURM cluster, with the user's profile.

`neuroflow-recover run --profile profiles/slurm` on a copy of the workflow and the example
(1 subject x 2 sessions: real HeudiConv + dcm2niix and QSIParc, the QSIPrep/QSIRecon
stand-ins). Only test overrides are layered on top of profiles/slurm: the partition and
account through the profile's own environment variables (NEUROFLOW_SLURM_PARTITION/_ACCOUNT)
and short status checks as command-line flags (they win over the profile's values).

QSIRecon is made to really need ~600 MB (a wrapper touches 600 MB, then runs the
stand-in) while the config gives it 400 MB: SLURM kills both QSIRecon jobs for memory, the
main Snakemake process resubmits them with the next attempt's memory (growth 3.0 -> 1200 MB)
and the run completes with nothing dead-lettered.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import probe
from helpers import copy_example
from neuroflow_recover.step.attempts import read_records

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CONFIGS = ["--configfile", "example/config.yaml", "--configfile", "hungry.yaml"]

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
time.sleep(8)
del block
standin = Path(__file__).resolve().parent / "example" / "standins" / "qsirecon_standin.py"
os.execv(sys.executable, [sys.executable, str(standin), *sys.argv[1:]])
"""

HUNGRY_CONFIG = """\
stages:
  qsirecon:
    container:
      command: ./hungry_qsirecon.py
    resources: { mem_mb: 400, runtime: 10, threads: 1, disk_mb: 500 }
    growth: { mem_mb: 3.0, runtime: 2.0, threads: 1.0, disk_mb: 2.0 }
"""


@pytest.fixture(scope="module")
def example(tmp_path_factory, cluster) -> Path:
    root = tmp_path_factory.mktemp("slurm_example") / "wf"
    copy_example(root, subjects=1, sessions=2)
    wrapper = root / "hungry_qsirecon.py"
    wrapper.write_text(HUNGRY_QSIRECON)
    wrapper.chmod(0o755)
    (root / "hungry.yaml").write_text(HUNGRY_CONFIG)
    return root


@pytest.fixture(scope="module")
def slurm_run(example) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(example), *CONFIGS,
         "run", "--profile", "profiles/slurm", "--", *probe.STATUS_OVERRIDES],
        capture_output=True, text=True, timeout=900, env=probe.cli_env(),
    )  # fmt: skip


def submissions(text: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, in submission order (from the plugin's submission lines)."""
    out: dict[str, list[str]] = {}
    for slurm_id, rule in re.findall(r"SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", text):
        out.setdefault(rule, []).append(slurm_id)
    return out


def test_example_completes_on_slurm_with_the_user_profile(example, slurm_run):
    assert slurm_run.returncode == 0, slurm_run.stdout + slurm_run.stderr[-4000:]
    assert slurm_run.stdout.splitlines()[-1] == "dead-lettered entries: none"
    diffmaps = sorted((example / "example/results/derivatives/qsiparc").rglob("*_diffmap.tsv"))
    assert {p.name.split("_")[1] for p in diffmaps} == {"ses-01", "ses-02"}
    jobs = submissions(slurm_run.stderr)
    # every stage ran as SLURM jobs: per session, per subject, per session, per session
    assert len(jobs["heudiconv_convert"]) == 2
    assert len(jobs["qsiprep_preprocess"]) == 1
    assert len(jobs["qsiparc_parcellate"]) == 2
    ids = [i for rule_ids in jobs.values() for i in rule_ids]
    rows = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,Partition,Account"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert {tuple(r.split("|")[1:]) for r in rows} == {(probe.PARTITION, "root")}


def test_memory_kills_are_resubmitted_with_more_memory(example, slurm_run):
    assert slurm_run.returncode == 0, slurm_run.stderr[-4000:]
    recon = submissions(slurm_run.stderr)["qsirecon_reconstruct"]
    assert len(recon) == 4  # two sessions, killed once each, resubmitted once each
    rows = {r.job_id: r for r in probe.sacct(recon)}
    assert sorted(r.req_mem for r in rows.values()) == ["1200M", "1200M", "400M", "400M"]
    killed = [i for i in recon if rows[i].state == "FAILED"]
    assert len(killed) == 2 and all(rows[i].req_mem == "400M" for i in killed)
    assert all(rows[i].state == "COMPLETED" for i in recon if i not in killed)
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
        assert final.resources["mem_mb"] == 1200
