"""Cause-aware retries in REAL Snakemake runs of a tiny workflow.

The workflow's one rule takes its resources from ``stage_resources`` and runs its tool
through ``neuroflow-recover exec``, like the shipped rules. The tool is a small script
that fails the way the real tools do unless it gets enough of the resource it lacks:

* subject ``mem``  prints a memory error until it gets >= 2000 MB;
* subject ``time`` prints SLURM's time-limit line until it gets >= 20 minutes;
* subject ``lic``  always fails on a missing FreeSurfer license (and leaves a marker each
  time it really runs).

Assertions come from the main log's job blocks (the resources Snakemake gave each attempt)
and from the attempt records.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from neuroflow_recover.step.attempts import read_records

pytestmark = pytest.mark.workflow

BIN = Path(sys.executable).parent
RULE = "qsiprep_preprocess"

SNAKEFILE = textwrap.dedent(
    '''
    from neuroflow_recover.step.resources import stage_resources


    configfile: "config/config.yaml"


    def attempt_resource(name):
        def get(wildcards, attempt):
            return stage_resources(config, "qsiprep_preprocess", wildcards, attempt)[name]

        return get


    rule all:
        input:
            expand("out/{subject}.txt", subject=config["subjects"]),


    rule qsiprep_preprocess:
        output:
            done="out/{subject}.txt",
        log:
            "logs/qsiprep_preprocess/{subject}.log",
        retries: 2
        resources:
            attempt=lambda wildcards, attempt: attempt,
            mem_mb=attempt_resource("mem_mb"),
            runtime=attempt_resource("runtime"),
            disk_mb=attempt_resource("disk_mb"),
            nf_threads=attempt_resource("threads"),
        shell:
            "neuroflow-recover exec --rule qsiprep_preprocess"
            " --wildcards subject={wildcards.subject} --attempt {resources.attempt}"
            " --log {log} --expect {output.done} --mem-mb {resources.mem_mb}"
            " --runtime {resources.runtime} --threads {resources.nf_threads}"
            " --disk-mb {resources.disk_mb}"
            " -- python tool.py {wildcards.subject} {output.done}"
            " {resources.mem_mb} {resources.runtime}"
    '''
)

TOOL = textwrap.dedent(
    '''
    import sys
    from pathlib import Path

    subject, output, mem_mb, runtime = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(f"tool: {subject} with mem_mb={mem_mb} runtime={runtime}", flush=True)
    if subject == "mem" and mem_mb < 2000:
        print("numpy.core._exceptions._ArrayMemoryError: Unable to allocate 3.2 GiB", flush=True)
        print("MemoryError", file=sys.stderr)
        sys.exit(1)
    if subject == "time" and runtime < 20:
        print("slurmstepd: error: *** JOB 13 ON node1 CANCELLED AT 2026-11-28T13:54:14 "
              "DUE TO TIME LIMIT ***", flush=True)
        sys.exit(143)
    if subject == "lic":
        with open("lic-ran.txt", "a") as fh:
            fh.write("ran\\n")
        print("ERROR: FreeSurfer license file not found at /opt/freesurfer/license.txt")
        sys.exit(2)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text("done\\n")
    '''
)


def make_workflow(root: Path, cause_aware: bool, subjects: list[str]) -> None:
    (root / "config").mkdir(parents=True)
    resources = {"mem_mb": 1000, "runtime": 10, "threads": 1, "disk_mb": 100}
    cfg = {
        "subjects": subjects,
        "stages": {
            "qsiprep": {
                "resources": resources,
                "growth": {"mem_mb": 2.0, "runtime": 2.0, "threads": 1.0, "disk_mb": 2.0},
                "max": {"mem_mb": 8000, "runtime": 80, "threads": 2, "disk_mb": 800},
            }
        },
        "error_handling": {
            "cause_aware": cause_aware,
            "circuit_breaker": {"enabled": True, "threshold": 3, "window_minutes": 10},
        },
    }
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "Snakefile").write_text(SNAKEFILE)
    (root / "tool.py").write_text(TOOL)


def run_snakemake(root: Path) -> tuple[subprocess.CompletedProcess, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", "--keep-going", "--nolock"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    assert logs, proc.stderr
    return proc, logs[-1].read_text()


def job_blocks(main_log: str) -> dict[str, list[dict[str, str]]]:
    """subject -> the `resources:` of each job block (one per attempt), in order."""
    out: dict[str, list[dict[str, str]]] = {}
    for block in re.findall(rf"^(?:local)?rule {RULE}:\n((?:[ \t]+.*\n)+)", main_log, re.M):
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines())
        subject = dict(kv.split("=", 1) for kv in fields["wildcards"].split(", "))["subject"]
        resources = dict(kv.split("=", 1) for kv in fields["resources"].split(", "))
        out.setdefault(subject, []).append(resources)
    return out


@pytest.fixture(scope="module")
def cause_aware_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cause-aware")
    make_workflow(root, cause_aware=True, subjects=["mem", "time", "lic"])
    proc, main_log = run_snakemake(root)
    return root, proc, main_log


def test_memory_failure_gives_the_retry_more_memory_only(cause_aware_run):
    root, proc, main_log = cause_aware_run
    attempts = job_blocks(main_log)["mem"]
    assert [a["attempt"] for a in attempts] == ["1", "2"]
    assert [(a["mem_mb"], a["runtime"]) for a in attempts] == [("1000", "10"), ("2000", "10")]
    first, second = read_records(root, RULE, {"subject": "mem"})
    assert (first.error_class, first.resource) == ("ResourceError", "memory")
    assert first.resources["mem_mb"] == 1000 and second.resources["mem_mb"] == 2000
    assert second.error_class is None and (root / "out" / "mem.txt").exists()


def test_time_limit_gives_the_retry_more_runtime_only(cause_aware_run):
    root, proc, main_log = cause_aware_run
    attempts = job_blocks(main_log)["time"]
    assert [(a["mem_mb"], a["runtime"]) for a in attempts] == [("1000", "10"), ("1000", "20")]
    first, second = read_records(root, RULE, {"subject": "time"})
    assert (first.error_class, first.resource, first.exit_code) == (
        "ResourceError", "runtime", 143)
    assert "DUE TO TIME LIMIT" in first.evidence
    assert second.error_class is None and second.resources["runtime"] == 20


def test_configuration_error_is_not_retried(cause_aware_run):
    root, proc, main_log = cause_aware_run
    assert proc.returncode != 0  # the lic job failed for good
    assert (root / "lic-ran.txt").read_text() == "ran\n"  # the tool ran exactly once
    attempts = job_blocks(main_log)["lic"]
    assert len(attempts) == 3  # Snakemake retried, but the step runner refused
    assert {a["mem_mb"] for a in attempts} == {"1000"}  # nothing grew
    records = read_records(root, RULE, {"subject": "lic"})
    assert [r.attempt for r in records] == [1, 2, 3]
    first = records[0]
    assert not first.skipped and first.error_class == "ConfigurationError"
    assert "FreeSurfer license file not found" in first.evidence
    for skipped in records[1:]:
        assert skipped.skipped and skipped.exit_code == 3
        assert (skipped.error_class, skipped.evidence) == ("ConfigurationError", first.evidence)
        assert skipped.tail == [skipped.tail[0]]  # only the not-starting line: no tool output
    log = (root / "logs" / "qsiprep_preprocess" / "lic.log").read_text()
    assert "neuroflow: not starting qsiprep_preprocess attempt 3: attempt 2 failed with " \
        "ConfigurationError: " in log


def test_blind_mode_grows_memory_and_runtime(tmp_path):
    make_workflow(tmp_path, cause_aware=False, subjects=["mem"])
    proc, main_log = run_snakemake(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    attempts = job_blocks(main_log)["mem"]
    assert [(a["mem_mb"], a["runtime"], a["disk_mb"]) for a in attempts] == [
        ("1000", "10", "100"), ("2000", "20", "200")]
