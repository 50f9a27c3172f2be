"""A failure that repeats is deterministic: REAL Snakemake runs of the toy workflow.

The rule runs its tool through the step runner with Snakemake's `retries: 2` (attempts
1..3). A job that fails twice with the same unknown message (numbers and paths differ, the
masked line is the same) is dead-lettered after the tool ran twice: attempt 2 is found
deterministic (NonRetryableError, "same failure on attempts 1 and 2") and attempt 3 does
not start the tool. A job failing with two different unknown messages gets its third attempt.
"""

from __future__ import annotations

import json

import pytest

from dlq_workflows import behave, make_toy_workflow, recover
from neuroflow_recover.step.attempts import read_records

pytestmark = pytest.mark.workflow

SAME = "worker {run}7 lost /scratch/run-{run}/chunk-{run}.mif at 12:0{run}:11"
FIRST, SECOND = "worker lost its input chunk", "checksum mismatch in block 7"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = make_toy_workflow(tmp_path_factory.mktemp("repeat") / "wf", [("same", "1"), ("diff", "1")],
                             use_exec=True, retries=2)
    behave(root, "same", "1", f"times|9|3|{SAME}")  # exit 3: no exit-code rule, unknown
    behave(root, "diff", "1", f"each|2|3|{FIRST} ;; {SECOND}")  # fails twice, then succeeds
    result = recover(root, "run", "--json", "--", "--cores", "1", "--keep-going")
    return root, result


def _records(root, subject):
    return read_records(root, "toy_step", {"subject": subject, "session": "1"})


def test_the_same_unknown_failure_is_dead_lettered_after_two_runs_of_the_tool(run):
    root, result = run
    assert result.returncode == 1, result.stderr[-3000:]
    assert (root / "counts" / "same_1").read_text() == "2"  # the tool ran twice, not three times
    first, second, third = _records(root, "same")
    assert (first.error_class, second.error_class) == ("RetryableError", "NonRetryableError")
    assert second.pattern_id == "neuroflow:repeated"
    assert second.evidence == "same failure on attempts 1 and 2: worker 17 lost /scratch/run-1/chunk-1.mif at 12:01:11"
    assert third.skipped and third.exit_code == 3
    (entry_id,) = json.loads(result.stdout)["dead_lettered"]
    shown = recover(root, "show", str(entry_id))
    assert shown.returncode == 0, shown.stderr
    assert "  error class:  NonRetryableError" in shown.stdout
    assert "  evidence:     same failure on attempts 1 and 2: worker 17 lost" in shown.stdout
    assert ("neuroflow: not starting toy_step attempt 3: attempt 2 failed with NonRetryableError: "
            "same failure on attempts 1 and 2") in shown.stdout


def test_two_different_unknown_failures_get_the_third_attempt(run):
    root, _ = run
    assert (root / "counts" / "diff_1").read_text() == "3"
    first, second, third = _records(root, "diff")
    assert (first.error_class, second.error_class) == ("RetryableError", "RetryableError")
    assert third.succeeded and not third.skipped
    assert (root / "results" / "diff" / "1.txt").exists()
