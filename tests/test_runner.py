"""`run`, `retry`, `retry-all` on a tiny real workflow: backoff, dead-lettering, resolution."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from dlq_workflows import VENV_BIN, behave, main_logs, make_toy_workflow, recover
from neuroflow_recover.logs.locations import lock_files

pytestmark = pytest.mark.workflow

FAST = {"NEUROFLOW_DELAY_SCALE": "0.002"}  # 1 min initial delay -> ~0.1 s
STALE = "OSError: [Errno 116] Stale file handle"
OOM = "MemoryError"
NO_DICOM = "Error: Unable to find any DICOM images in dicom/02 (or subfolders 5 deep)"


def _list(root: Path, *extra: str) -> list[dict]:
    result = recover(root, "list", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _show(root: Path, entry_id: int) -> dict:
    result = recover(root, "show", str(entry_id), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_transient_failure_is_retried_after_backoff_and_not_dead_lettered(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("02", "1")])
    behave(root, "02", "1", f"times|1|1|{STALE}")
    result = recover(root, "run", "--", "--cores", "1", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "transient failure of toy_step/session-1_subject-02; retry round 2 in" in result.stderr
    assert "round 1: snakemake exit code 1" in result.stdout
    assert "retried after backoff (transient): toy_step/session-1_subject-02" in result.stdout
    assert "round 2: snakemake exit code 0" in result.stdout
    assert "dead-lettered entries: none" in result.stdout
    assert (root / "results" / "02" / "1.txt").exists()
    assert _list(root, "--all") == []


def test_persistent_transient_failure_uses_the_policy_then_dead_letters(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", f"until|never|1|{STALE}")
    result = recover(root, "run", "--json", "--", "--cores", "1", env=FAST)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert [r["snakemake_exit_code"] for r in summary["rounds"]] == [1, 1, 1]
    # rounds 2 and 3 ask Snakemake for exactly the failed job's output
    assert summary["rounds"][1]["command"].endswith("-- results/01/1.txt")
    (entry_id,) = summary["dead_lettered"]
    entry = _show(root, entry_id)
    assert entry["error_type"] == "TransientError"
    assert entry["attempts"] == 3  # max_attempts of the default policy, across rounds
    assert len({h["run_id"] for h in entry["history"]}) == 3
    assert entry["invocation"] == {
        "configfiles": [],
        "profile": None,
        "snakemake_args": ["--cores", "1"],
    }


def test_non_transient_failures_are_dead_lettered_at_once(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("02", "1")])
    behave(root, "02", "1", f"until|never|1|{NO_DICOM}")
    result = recover(root, "run", "--", "--cores", "1", "--keep-going", env=FAST)
    assert result.returncode == 1, result.stderr
    assert "round 2" not in result.stdout
    (entry,) = _list(root)
    assert entry["error_type"] == "ValidationError" and entry["retryable"] is False
    assert (entry["subject"], entry["session"], entry["attempts"]) == ("02", "1", 1)
    assert f"dead-lettered entries: {entry['id']} " in result.stdout
    assert (root / "results" / "01" / "1.txt").exists()


def test_retry_resolves_only_when_the_job_succeeds(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("01", "2")])
    behave(root, "01", "2", f"until|fixed|1|{OOM}")
    run = recover(root, "run", "--", "--cores", "1", "--keep-going", env=FAST)
    assert run.returncode == 1, run.stderr
    (entry,) = _list(root)
    entry_id = entry["id"]
    assert entry["error_type"] == "ResourceError" and entry["attempts"] == 1

    logs = main_logs(root)
    dry = recover(root, "retry", str(entry_id), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    command = f"{VENV_BIN / 'snakemake'} --cores 1 --keep-going -- results/01/2.txt"
    assert dry.stdout == (
        f"entry {entry_id}: would run: {command}\n  targets:\n    results/01/2.txt\n"
    )
    assert main_logs(root) == logs  # a dry run starts no Snakemake ...
    assert _show(root, entry_id)["attempts"] == 1  # ... and changes nothing

    failed = recover(root, "retry", str(entry_id))
    assert failed.returncode == 1, failed.stderr
    assert f"entry {entry_id}: still open" in failed.stdout
    shown = _show(root, entry_id)
    assert shown["resolved"] is False
    assert len(shown["history"]) == 2 and shown["attempts"] == 2
    assert shown["history"][1]["error_type"] == "ResourceError"

    (root / "fixed").write_text("")
    logs = main_logs(root)
    fixed = recover(root, "retry", str(entry_id))
    assert fixed.returncode == 0, fixed.stderr
    (new_log,) = sorted(set(main_logs(root)) - set(logs))
    assert fixed.stdout.splitlines() == [
        f"entry {entry_id}: ran: {command}",
        "  targets:",
        "    results/01/2.txt",
        f"  snakemake exit code 0, log .snakemake/log/{new_log.name}",
        f"  entry {entry_id}: resolved (the job succeeded)",
    ]
    shown = _show(root, entry_id)
    assert shown["resolved"] is True and shown["resolved_by"] == "retry"
    assert shown["resolution_notes"].startswith("retried in Snakemake run 20")
    assert len(shown["history"]) == 2
    assert _list(root) == []
    again = recover(root, "retry", str(entry_id))
    assert again.returncode == 1 and "already resolved" in again.stderr


def test_non_retryable_entries_need_force_and_retry_all(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1"), ("02", "1"), ("03", "1")])
    behave(root, "01", "1", f"until|fixed|1|{NO_DICOM}")
    behave(root, "02", "1", f"until|fixed|1|{OOM}")
    behave(root, "03", "1", f"until|fixed|1|{OOM}")
    assert recover(root, "run", "--", "--cores", "1", "--keep-going").returncode == 1
    entries = {e["subject"]: e["id"] for e in _list(root)}
    refused = recover(root, "retry", str(entries["01"]))
    assert refused.returncode == 1
    why = (
        "failed with ValidationError (not retryable) and neither its inputs nor the "
        "configuration changed since "
    )
    assert f"Error: entry {entries['01']} {why}" in refused.stderr
    dry = recover(root, "retry-all", "--pipeline", "toy_step", "--dry-run")
    assert dry.returncode == 1, dry.stderr  # entry 01 refused, as by `retry`: not done
    (line,) = [line for line in dry.stdout.splitlines() if "would run" in line]
    assert line.endswith(
        ("-- results/02/1.txt results/03/1.txt", "-- results/03/1.txt results/02/1.txt")
    )
    assert f"entry {entries['01']}: skipped, {why}" in dry.stdout

    (root / "fixed").write_text("")  # not an input of the job: only --force retries 01
    done = recover(root, "retry-all", "--pipeline", "toy_step", "--force")
    assert done.returncode == 0, done.stderr
    assert _list(root) == []
    assert {e["resolved_by"] for e in _list(root, "--all")} == {"retry"}


def _wait_for(condition, holder: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert holder.poll() is None, f"Snakemake ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_running_snakemake_lock_and_stale_lock(tmp_path):
    """Every step waits for an observable state, never for time.

    Snakemake creates `.snakemake/locks` when it STARTS and removes the whole directory when
    it ENDS, so the directory comes and goes with every Snakemake process: the test only
    looks at it while no Snakemake can be starting or ending (the holder is inside its job,
    or has been waited for), and `lock_files` treats a directory that vanishes between
    looking and listing as "no lock".
    """
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", "wait|go|0|")
    holder = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--cores", "1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the job runs (so Snakemake has written its locks) and waits for `go`
        _wait_for(lambda: (root / "started_01_1").exists(), holder, "the job to start")
        _wait_for(lambda: lock_files(root), holder, "the lock files")
        locked = recover(root, "run", "--", "--cores", "1")
        assert locked.returncode == 1
        assert (
            "Snakemake is running in" in locked.stderr and "nothing was changed" in locked.stderr
        )
        assert holder.poll() is None  # it held the lock the whole time
    finally:
        (root / "go").write_text("")
        holder.wait(timeout=600)
    assert holder.returncode == 0
    assert lock_files(root) == []  # Snakemake released its lock when it ended

    # a lock left by a killed Snakemake: no process alive
    locks = root / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(str(root / "results" / "01" / "1.txt") + "\n")
    stale = recover(root, "run", "--", "--cores", "1")
    assert stale.returncode == 1
    assert "stale Snakemake lock" in stale.stderr and "snakemake --unlock" in stale.stderr
    assert [p.name for p in lock_files(root)] == ["0.output.lock"]  # nothing was changed
    unlocked = recover(root, "run", "--unlock", "--", "--cores", "1")
    assert unlocked.returncode == 0, unlocked.stderr
    assert lock_files(root) == []


def test_lock_files_tolerates_a_vanishing_lock_directory(tmp_path):
    """The directory of a Snakemake that is starting or ending may be gone the next moment."""
    assert lock_files(tmp_path) == []
    (tmp_path / ".snakemake").mkdir()
    (tmp_path / ".snakemake" / "locks").write_text("not a directory")
    assert lock_files(tmp_path) == []


def test_delay_scale_must_be_a_number(tmp_path):
    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    result = recover(root, "run", "--", "--cores", "1", env={"NEUROFLOW_DELAY_SCALE": "fast"})
    assert result.returncode == 1
    assert "NEUROFLOW_DELAY_SCALE='fast' is not a number" in result.stderr
    assert not (root / "results").exists()  # Snakemake never started


def test_failures_waiting_for_a_retry_are_queued_when_the_next_round_cannot_run(tmp_path):
    """Snakemake cannot start in round 2 (the Snakefile broke during the backoff)."""
    from neuroflow_recover.errors import SnakemakeFailed
    from neuroflow_recover.queue.database import open_database
    from neuroflow_recover.queue.entries import list_entries
    from neuroflow_recover.recover.run import run_workflow
    from neuroflow_recover.workflow.config import load_config
    from neuroflow_recover.workflow.invocation import Invocation

    root = make_toy_workflow(tmp_path / "wf", [("01", "1")])
    behave(root, "01", "1", f"until|never|1|{STALE}")
    waits: list[float] = []

    def break_the_snakefile(seconds: float) -> None:
        waits.append(seconds)
        (root / "Snakefile").write_text("rule broken\n    this is not Snakemake\n")

    db = open_database(None, root)
    with db.sessions() as session:
        with pytest.raises(SnakemakeFailed, match="before running any job"):
            run_workflow(
                session,
                root,
                load_config(root),
                Invocation([], None, ["--cores", "1"]),
                delay_scale=0.001,
                echo=lambda line: None,
                sleep=break_the_snakefile,
            )
    assert waits  # the backoff happened (through the injected sleep)
    with db.sessions() as session:
        (entry,) = list_entries(session)
        assert (entry.error_type, entry.attempts) == ("TransientError", 1)
    db.dispose()
