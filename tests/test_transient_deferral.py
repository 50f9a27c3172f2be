"""Transient failures under `run`: backoff between rounds instead of Snakemake's immediate retries.

A real toy workflow whose rule has `retries: 2` and runs its tool through the real step
runner. `run` sets NEUROFLOW_DEFER_TRANSIENT=1 for Snakemake, so after a transient failure
the step runner does not start the tool again in that Snakemake run (`deferred` records);
`run` re-runs the job after the policy's backoff, counting only attempts that ran the tool.
The tool counts its own runs in `counts/<subject>_<session>` (the truth about real runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlq_workflows import behave, make_toy_workflow, recover, snakemake
from neuroflow_recover.classify.classifier import Classifier
from neuroflow_recover.step.attempts import read_records

pytestmark = pytest.mark.workflow

FAST = {"NEUROFLOW_DELAY_SCALE": "0.002"}  # 1 min initial delay -> ~0.1 s
STALE = "OSError: [Errno 116] Stale file handle"
WC = {"subject": "01", "session": "1"}


def _tool_runs(root: Path) -> int:
    counter = root / "counts" / "01_1"
    return int(counter.read_text()) if counter.exists() else 0


def _entries(root: Path) -> list[dict]:
    result = recover(root, "list", "--all", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_transient_failure_is_deferred_to_the_next_round_and_recovers_there(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")], use_exec=True, retries=2)
    behave(root, "01", "1", f"times|1|1|{STALE}")  # fails on its first run only
    result = recover(root, "run", "--json", "--", "--cores", "1", env=FAST)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [r["snakemake_exit_code"] for r in summary["rounds"]] == [1, 0]
    assert summary["rounds"][0]["retried_jobs"] == ["toy_step/session-1_subject-01"]
    assert summary["dead_lettered"] == []
    assert "transient failure of toy_step/session-1_subject-01; retry round 2 in" in result.stderr
    assert _tool_runs(root) == 2  # one real run per round, none of them immediate
    assert (root / "results" / "01" / "1.txt").exists()
    assert _entries(root) == []

    records = read_records(root, "toy_step", WC)
    # round 1: attempt 1 ran and failed, Snakemake's retries 2 and 3 were deferred;
    # round 2: attempt 1 ran and succeeded
    assert [(r.attempt, r.skipped, r.deferred, r.error_class) for r in records] == [
        (1, False, False, "TransientError"),
        (2, True, True, "TransientError"),
        (3, True, True, "TransientError"),
        (1, False, False, None),
    ]
    assert all(r.retryable for r in records[:3]) and records[1].exit_code == 3
    line = records[1].tail[-1]
    assert line.startswith(
        "neuroflow: not starting toy_step attempt 2: attempt 1 failed with TransientError: "
    )
    assert line.endswith(
        " -- deferred: `neuroflow-recover run` re-runs transient failures after a backoff"
    )
    assert Classifier.from_config({}).classify(line).error_class == "TransientError"


def test_a_persistent_transient_failure_runs_the_tool_max_attempts_times_then_is_queued(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")], use_exec=True, retries=2)
    behave(root, "01", "1", f"until|never|1|{STALE}")
    result = recover(root, "run", "--json", "--", "--cores", "1", env=FAST)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert [r["snakemake_exit_code"] for r in summary["rounds"]] == [1, 1, 1]
    assert _tool_runs(root) == 3  # max_attempts of the policy, in total, across rounds
    (entry_id,) = summary["dead_lettered"]
    (entry,) = _entries(root)
    assert (entry["id"], entry["error_type"], entry["attempts"]) == (entry_id, "TransientError", 3)
    shown = json.loads(recover(root, "show", str(entry_id), "--json").stdout)
    history = shown["history"]
    assert len(history) == 3  # the real runs only, one per round
    assert len({h["run_id"] for h in history}) == 3
    assert {(h["source"], h["error_type"], h["exit_code"]) for h in history} == {
        ("attempt-record", "TransientError", 1)
    }
    assert shown["retryable"] is True and shown["pattern_id"] == "stale_nfs"
    deferred = [r for r in read_records(root, "toy_step", WC) if r.deferred]
    assert len(deferred) == 6  # attempts 2 and 3 of each of the 3 rounds


def test_plain_snakemake_keeps_its_immediate_retries(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")], use_exec=True, retries=2)
    behave(root, "01", "1", f"times|1|1|{STALE}")
    assert snakemake(root).returncode == 0  # no NEUROFLOW_DEFER_TRANSIENT
    assert _tool_runs(root) == 2  # attempt 2 ran the tool at once, in the same run
    records = read_records(root, "toy_step", WC)
    assert [(r.attempt, r.skipped, r.deferred, r.error_class) for r in records] == [
        (1, False, False, "TransientError"),
        (2, False, False, None),
    ]


def test_the_step_runner_defers_only_after_a_transient_failure(tmp_path):
    """`exec` directly: NEUROFLOW_DEFER_TRANSIENT only affects retries of transient failures."""
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    marker = root / "tool-ran"

    def step(attempt: int, code: str, defer: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.pop("NEUROFLOW_DEFER_TRANSIENT", None)
        if defer is not None:
            env["NEUROFLOW_DEFER_TRANSIENT"] = defer
        args = ["exec", "--rule", "toy_step", "--wildcards", "subject=01",
                "--wildcards", "session=1", "--attempt", str(attempt), "--log", "step.log",
                "--mem-mb", "100", "--runtime", "5", "--threads", "1", "--", sys.executable,
                "-c", code]  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "neuroflow_recover.cli", *args],
            cwd=root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    touch = f"open({str(marker)!r}, 'w')"
    stale = f"import sys; print({STALE!r}); sys.exit(1)"
    assert step(1, stale, "1").returncode == 1
    assert step(2, touch, "0").returncode == 0 and marker.exists()  # "0": not deferred
    marker.unlink()
    assert step(1, stale, "1").returncode == 1
    assert step(2, touch, None).returncode == 0 and marker.exists()  # unset: not deferred
    marker.unlink()
    assert step(1, stale, "1").returncode == 1
    deferred = step(2, touch, "1")
    assert deferred.returncode == 3 and not marker.exists()
    assert " -- deferred: " in deferred.stderr
    memory = "import sys; print('MemoryError'); sys.exit(1)"
    assert step(1, memory, "1").returncode == 1
    assert step(2, touch, "1").returncode == 0 and marker.exists()  # not transient: runs
    kinds = [(r.attempt, r.deferred, r.error_class) for r in read_records(root, "toy_step", WC)]
    assert kinds == [
        (1, False, "TransientError"), (2, False, None),
        (1, False, "TransientError"), (2, False, None),
        (1, False, "TransientError"), (2, True, "TransientError"),
        (1, False, "ResourceError"), (2, False, None),
    ]  # fmt: skip
