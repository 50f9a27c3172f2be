"""Acceptance: `neuroflow-recover run` / `retry` on the example workflow, end to end.

A copy of the workflow and the example (2 subjects x 2 sessions, synthetic DICOMs, real
HeudiConv + dcm2niix and QSIParc, the QSIPrep/QSIRecon stand-ins) runs in tmp_path with

* sub-01 ses-02 made to fail for good: its DICOM files are replaced by junk;
* one QSIRecon job made to fail ONCE with an out-of-memory death: the configured QSIRecon
  command is a test wrapper that prints `MemoryError` / `Killed` and exits 137 the first
  time it is called (whichever job that is), then runs the stand-in.

Expected: Snakemake's rule-level retry absorbs the OOM (attempt 2 gets more memory), so
`run` ends with exactly ONE unresolved entry, a ValidationError for sub-01 ses-02. After
the DICOMs are replaced, a plain `retry ID` (allowed for a non-retryable entry because its
input changed since it failed) re-runs only sub-01's jobs and resolves it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_example, tool_env
from neuroflow_recover.step.attempts import read_records

pytestmark = pytest.mark.workflow

CONFIGS = ["--configfile", "example/config.yaml", "--configfile", "oom_once.yaml"]

OOM_WRAPPER = """\
#!/usr/bin/env python3
# test wrapper: the first call dies like an out-of-memory kill, later calls run the stand-in
import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
try:
    os.close(os.open(here / "oom_injected", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    standin = here / "example" / "standins" / "qsirecon_standin.py"
    os.execv(sys.executable, [sys.executable, str(standin), *sys.argv[1:]])
print("Traceback (most recent call last):", file=sys.stderr)
print("MemoryError: Unable to allocate 1.61 GiB for an array", file=sys.stderr)
print("Killed", file=sys.stderr)
sys.exit(137)
"""

OOM_CONFIG = """\
stages:
  qsirecon:
    container:
      command: ./oom_once.py
"""

STATS_CSV = """\
group,key,total,unresolved
all,all,1,1
pipeline,bids_conversion,1,1
error_type,ValidationError,1,1
subject,01,1,1
"""


def _env() -> dict:
    return tool_env(NEUROFLOW_DELAY_SCALE="0.01")  # heudiconv, qsiparc on PATH


def recover(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *CONFIGS, *args],
        capture_output=True,
        text=True,
        timeout=1500,
        env=_env(),
    )


def _make_data(root: Path, out: str) -> None:
    subprocess.run(
        [sys.executable, "example/make_example_data.py", "--out", out, "--subjects", "2",
         "--sessions", "2"],
        cwd=root, check=True, capture_output=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    root = copy_example(tmp_path_factory.mktemp("example") / "wf", subjects=2, sessions=2)
    for dcm in sorted((root / "example/data/dicom/sub-01/ses-02").rglob("*.dcm")):
        dcm.write_bytes(b"truncated, not a DICOM file\n" * 4)
    wrapper = root / "oom_once.py"
    wrapper.write_text(OOM_WRAPPER)
    wrapper.chmod(0o755)
    (root / "oom_once.yaml").write_text(OOM_CONFIG)
    return root


@pytest.fixture(scope="module")
def first_run(example) -> tuple[Path, subprocess.CompletedProcess]:
    return example, recover(example, "run", "--", "--cores", "2")


def _jobs_started(log_text: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job block of a Snakemake main log."""
    jobs = []
    lines = log_text.splitlines()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"(?:local)?rule (\w+):", line)
        if not match:
            continue
        wildcards = ""
        for detail in lines[index + 1 :]:
            if not detail.startswith("    "):
                break
            if detail.strip().startswith("wildcards: "):
                wildcards = detail.strip().removeprefix("wildcards: ")
        jobs.append((match.group(1), wildcards))
    return jobs


def _entries(root: Path, *extra: str) -> list[dict]:
    result = recover(root, "list", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_dead_letters_only_the_corrupt_session(first_run):
    root, run = first_run
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]
    (entry,) = _entries(root)
    assert (entry["pipeline"], entry["rule"], entry["subject"], entry["session"]) == (
        "bids_conversion",
        "heudiconv_convert",
        "01",
        "02",
    )
    assert entry["error_type"] == "ValidationError" and entry["retryable"] is False
    assert run.stdout.splitlines()[-1] == (
        f"dead-lettered entries: {entry['id']} (see `neuroflow-recover list` / `show ID`)"
    )
    assert run.stdout.splitlines()[-2] == "snakemake exit code: 1"
    # the rest of the data went through: both sessions of sub-02 reached QSIParc
    diffmaps = sorted((root / "example/results/derivatives/qsiparc").rglob("*_diffmap.tsv"))
    assert {p.name.split("_")[0] for p in diffmaps} == {"sub-02"}
    assert {p.name.split("_")[1] for p in diffmaps} == {"ses-01", "ses-02"}


def test_the_out_of_memory_death_was_retried_with_more_memory(first_run):
    root, _ = first_run
    assert (root / "oom_injected").exists()
    records = [
        r
        for session in ("01", "02")
        for r in read_records(root, "qsirecon_reconstruct", {"subject": "02", "session": session})
    ]
    (oom,) = [r for r in records if r.exit_code == 137]
    assert (oom.error_class, oom.resource) == ("ResourceError", "memory")
    (retried,) = [r for r in records if r.wildcards == oom.wildcards and r.attempt == 2]
    assert retried.succeeded
    assert retried.resources["mem_mb"] > oom.resources["mem_mb"]


def test_list_show_and_stats_show_the_entry(first_run):
    root, _ = first_run
    (entry,) = _entries(root)
    table = recover(root, "list")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "PIPELINE", "SUBJECT"]
    assert row.split()[:8] == [
        str(entry["id"]), "bids_conversion", "01", "02", "heudiconv_convert",
        "ValidationError", "-", str(entry["attempts"]),
    ]  # fmt: skip
    show = recover(root, "show", str(entry["id"]))
    assert show.returncode == 0
    assert (
        "  error class:  ValidationError  (not retryable: `retry` needs a changed input or "
        "configuration, or --force)" in show.stdout
    )
    assert "example/results/logs/heudiconv_convert/sub-01_ses-02.log" in show.stdout
    assert "    example/results/bids/sub-01/ses-02/dwi/sub-01_ses-02_dwi.nii.gz" in show.stdout
    assert "  attempt history:" in show.stdout and "    #1  " in show.stdout
    details = json.loads(recover(root, "show", str(entry["id"]), "--json").stdout)
    assert details["history"][0]["source"] == "attempt-record"
    assert details["history"][0]["error_type"] == "ValidationError"
    assert details["evidence"]
    assert details["invocation"]["configfiles"] == ["example/config.yaml", "oom_once.yaml"]
    assert all("sub-01" in target for target in details["targets"])
    stats = recover(root, "stats", "--format", "csv")
    assert stats.returncode == 0 and stats.stdout == STATS_CSV


def test_retry_after_fixing_the_input_reruns_only_that_subject(first_run, tmp_path):
    root, _ = first_run
    (entry,) = _entries(root)
    entry_id = str(entry["id"])
    refused = recover(root, "retry", entry_id)
    assert refused.returncode == 1
    assert (
        f"entry {entry_id} failed with ValidationError (not retryable) and neither its inputs "
        "nor the configuration changed since " in refused.stderr
    )
    assert "fix the cause and retry, or use --force" in refused.stderr

    # fix the input: fresh DICOMs for sub-01 ses-02 (other sessions' files untouched)
    _make_data(root, str(tmp_path / "fresh"))
    broken = root / "example/data/dicom/sub-01/ses-02"
    shutil.rmtree(broken)
    shutil.copytree(tmp_path / "fresh" / "dicom" / "sub-01" / "ses-02", broken)
    results = root / "example/results"
    other = {p: p.stat().st_mtime_ns for p in results.rglob("*") if "sub-02" in p.name}
    assert other

    retry = recover(root, "retry", entry_id, "--json")  # the input changed: no --force
    assert retry.returncode == 0, retry.stdout + retry.stderr[-3000:]
    outcome = json.loads(retry.stdout)
    assert outcome["resolved"] == [int(entry_id)] and outcome["still_open"] == []
    assert outcome["snakemake_exit_code"] == 0

    # only sub-01's jobs ran: the failed conversion and everything downstream of it
    ran = _jobs_started((root / outcome["log"]).read_text())
    assert sorted(ran) == [
        ("heudiconv_convert", "subject=01, session=02"),
        ("qsiparc_parcellate", "subject=01, session=01"),
        ("qsiparc_parcellate", "subject=01, session=02"),
        ("qsiprep_preprocess", "subject=01"),
        ("qsirecon_reconstruct", "subject=01, session=01"),
        ("qsirecon_reconstruct", "subject=01, session=02"),
    ]
    assert {p: p.stat().st_mtime_ns for p in other} == other  # sub-02 untouched
    diffmaps = sorted((results / "derivatives/qsiparc").rglob("*_diffmap.tsv"))
    assert {p.name.split("_")[0] for p in diffmaps} == {"sub-01", "sub-02"}

    assert _entries(root) == []
    (resolved,) = _entries(root, "--all")
    assert resolved["resolved"] is True and resolved["resolved_by"] == "retry"
    stats = json.loads(recover(root, "stats", "--format", "json").stdout)
    assert (stats["total"], stats["unresolved"]) == (1, 0)
