"""Promises that a mutation audit found untested: each test fails when its code is removed.

* `retry` resolves an entry only when ITS job ran and succeeded (not when Snakemake exits 0
  for another reason: a dry run slipped through, the target counted as up to date);
* the watchdog's stop path: SIGINT, SIGKILL after the grace, the stall error, on real
  processes;
* `targets_for`; `retry-all` runs one Snakemake per invocation and prints JSON; Ctrl-C
  during `run` queues the failures held for a retry; `run --delay-scale`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dlq_workflows import behave, make_toy_workflow, recover
from neuroflow_recover.errors import RunStalled
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import AttemptEvent, JobFailure, dead_letter, get_entry
from neuroflow_recover.recover.process import run_snakemake
from neuroflow_recover.recover.watchdog import RunWatch, WatchLimits, stop_process
from neuroflow_recover.workflow.sheet import Session
from neuroflow_recover.workflow.targets import job_outputs, targets_for

STALE = "OSError: [Errno 116] Stale file handle"
NO_DICOM = "Error: Unable to find any DICOM images in dicom/01 (or subfolders 5 deep)"


# --- retry resolves only what really ran --------------------------------------------------


def _entry(root: Path, invocation: dict, subject: str = "01", error: str = "TransientError"):
    """An open entry for toy job (subject, 1) whose output does not exist."""
    db = open_database(None, root)
    with db.sessions() as session, session.begin():
        entry = dead_letter(
            session,
            JobFailure(
                rule="toy_step", wildcards={"subject": subject, "session": "1"},
                pipeline_name="toy_step", error_type=error, retryable=True,
                error_message="generated", evidence=STALE, invocation=invocation,
                failed_at=datetime(2026, 1, 1, tzinfo=UTC),
                events=[AttemptEvent(event_key=f"gen:{subject}", source="snakemake-log")],
                targets=[f"results/{subject}/1.txt"],
                error_details={"output": [f"results/{subject}/1.txt"]},
            ),
        )  # fmt: skip
        entry_id = entry.id
    return db, entry_id


@pytest.mark.workflow
def test_a_retry_whose_snakemake_ran_nothing_keeps_the_entry_open(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    # a dry run slipped into the stored invocation: Snakemake exits 0, runs nothing
    db, entry_id = _entry(root, {"snakemake_args": ["--cores", "1", "-n"]})
    result = recover(root, "retry", str(entry_id), "--json")
    outcome = json.loads(result.stdout)
    assert outcome["snakemake_exit_code"] == 0
    assert outcome["still_open"] == [entry_id] and outcome["resolved"] == []
    assert result.returncode == 1
    with db.sessions() as session:
        entry = get_entry(session, entry_id)
        assert not entry.resolved
        assert "outputs are missing" in entry.history[-1].evidence


@pytest.mark.workflow
def test_a_retry_resolves_when_its_job_ran_and_wrote_its_outputs(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    db, entry_id = _entry(root, {"snakemake_args": ["--cores", "1"]})
    result = recover(root, "retry", str(entry_id), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resolved"] == [entry_id]
    assert (root / "results" / "01" / "1.txt").read_text() == "ok\n"


@pytest.mark.workflow
def test_retry_all_runs_one_snakemake_per_invocation_and_prints_json(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("02", "1"), ("03", "1")])
    _entry(root, {"snakemake_args": ["--cores", "1"]}, "01")
    _entry(root, {"snakemake_args": ["--cores", "1"]}, "02")
    _entry(root, {"snakemake_args": ["--cores", "2"]}, "03")
    result = recover(root, "retry-all", "--pipeline", "toy_step", "--json")
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    by_command = {o["command"].split(" -- ")[0].split("snakemake ", 1)[1]: o for o in outcomes}
    assert sorted(by_command) == ["--cores 1", "--cores 2"]
    assert by_command["--cores 1"]["targets"] == ["results/01/1.txt", "results/02/1.txt"]
    assert by_command["--cores 2"]["targets"] == ["results/03/1.txt"]
    assert sorted(i for o in outcomes for i in o["resolved"]) == [1, 2, 3]


# --- run ----------------------------------------------------------------------------------


@pytest.mark.workflow
def test_ctrl_c_during_the_backoff_queues_what_waited_for_a_retry(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")], use_exec=True)
    behave(root, "01", "1", f"until|never|1|{STALE}")
    run = subprocess.Popen(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "run", "--delay-scale",
         "1", "--", "--cores", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    waited = ""
    deadline = time.monotonic() + 600  # a safety bound, not a speed claim
    while "retry round 2 in" not in waited:
        line = run.stderr.readline()
        assert line or run.poll() is None, "run ended before its backoff"
        assert time.monotonic() < deadline
        waited += line
    run.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the backoff (minutes long)
    run.communicate(timeout=300)
    assert run.returncode != 0
    listed = json.loads(recover(root, "list", "--json").stdout)
    assert [(e["subject"], e["error_type"]) for e in listed] == [("01", "TransientError")]


def test_run_delay_scale_is_checked():
    result = subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "run", "--delay-scale", "-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "--delay-scale" in result.stderr


# --- targets ------------------------------------------------------------------------------


class _Job:
    def __init__(self, rule, wildcards, output):
        self.rule, self.wildcards, self.output = rule, wildcards, output


def test_targets_are_the_jobs_outputs_and_its_subjects_final_outputs():
    cfg = _cfg()
    sessions = [Session("01", "1", "d1", 2), Session("01", "2", "d2", 3), Session("02", "1", "d3", 4)]
    job = _Job("qsiprep_preprocess", {"subject": "01"}, ["out/derivatives/qsiprep/sub-01.html"])
    targets = targets_for(job, cfg, sessions)
    assert targets[0] == "out/derivatives/qsiprep/sub-01.html"
    finals = targets[1:]
    assert finals and all("/sub-01/" in t and t.endswith("_diffmap.tsv") for t in finals)
    assert {t.split("/ses-")[1][0] for t in finals} == {"1", "2"}  # both sessions, no sub-02
    # a rule outside the workflow: only its own outputs; no sheet: the same
    assert targets_for(_Job("toy", {"subject": "01"}, ["a", "a", "b"]), cfg, sessions) == ["a", "b"]
    assert targets_for(job, cfg, None) == ["out/derivatives/qsiprep/sub-01.html"]


def test_job_outputs_of_an_entry_come_from_its_details():
    class Entry:
        error_details = {"output": ["x", "y"]}

    assert job_outputs(Entry()) == ["x", "y"]


def test_what_a_failure_does_not_know_adds_no_targets():
    class Bare:  # no output, details, rule or wildcards: an entry of an unknown job
        pass

    class NoOutput:
        error_details = {"message": "killed"}

    assert job_outputs(Bare()) == [] and job_outputs(NoOutput()) == []
    assert targets_for(Bare(), _cfg(), []) == []


def _cfg() -> dict:
    from neuroflow_recover.workflow.config import validate_config

    return validate_config({"sessions": "s.tsv", "output_dir": "out", "heuristic": "h.py",
                            "freesurfer_license": "l.txt", "templateflow_home": None})  # fmt: skip


# --- the watchdog's stop path, on real processes --------------------------------------------

STUBBORN = textwrap.dedent(
    """\
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Snakemake that ignores Ctrl-C
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(str(os.getpid()))
    print("SLURM run ID: test-run-id", flush=True)
    while True:
        time.sleep(1)
    """
)
POLITE = STUBBORN.replace("signal.SIG_IGN", "lambda *a: sys.exit(130)")


def test_a_stalled_run_is_stopped_with_sigkill_after_the_grace_and_says_why(tmp_path):
    # no squeue here: the watch sees no job of the run, as with accounting down
    pid_file = tmp_path / "pid"
    outcome: list[BaseException] = []

    def watched():
        try:
            run_snakemake([sys.executable, "-c", STUBBORN, str(pid_file)], tmp_path,
                          echo=lambda _: None, stall_seconds=2)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=watched, daemon=True)
    thread.start()
    thread.join(timeout=300)  # a safety bound: without the watchdog it never ends
    if thread.is_alive():
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        pytest.fail("the stalled run was not stopped")
    (stalled,) = outcome
    assert isinstance(stalled, RunStalled)
    assert "made no progress for 2 s" in str(stalled)
    assert "SLURM run test-run-id" in str(stalled)
    with pytest.raises(ProcessLookupError):  # it is gone
        os.kill(int(pid_file.read_text()), 0)


def test_stop_process_sends_sigint_first_and_sigkill_only_to_what_ignores_it(tmp_path):
    polite = subprocess.Popen([sys.executable, "-c", POLITE], stdout=subprocess.PIPE)
    polite.stdout.readline()
    stop_process(polite, grace_seconds=60)
    assert polite.returncode == 130  # it ended on SIGINT, within the grace
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
    stubborn.stdout.readline()
    stop_process(stubborn, grace_seconds=1)
    assert stubborn.returncode == -signal.SIGKILL


def test_run_watch_waits_while_the_run_has_jobs_and_outside_slurm():
    clock = [0.0]
    jobs: list[list[str] | None] = [[]]  # nothing on SLURM: a watched local run would stall
    watch = RunWatch(WatchLimits(10, 1, 5), lambda run_id: jobs[0], clock=lambda: clock[0])
    clock[0] = 100
    assert watch.verdict() is None  # no SLURM run ID: a local run is never stopped
    jobs[0] = ["42"]
    watch.feed("SLURM run ID: abc\n")
    clock[0] = 200
    assert watch.verdict() is None  # quiet, but a job of the run is queued
    jobs[0] = []
    clock[0] = 205
    assert watch.verdict() is None  # not yet stall_seconds without a job
    clock[0] = 211
    assert "no job of this run (SLURM run abc)" in watch.verdict()
    jobs[0] = None
    assert "(squeue failed)" in watch.verdict()


@pytest.mark.workflow
def test_stall_timeout_outside_slurm_never_stops_a_local_run(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", "wait|go|0|")
    env = dict(os.environ, NEUROFLOW_STALL_SECONDS="1")
    run = subprocess.Popen(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "run", "--", "--cores",
         "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (root / "started_01_1").exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(5)  # five stall timeouts of silence: a local run is not watched
    assert run.poll() is None
    (root / "go").write_text("")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
