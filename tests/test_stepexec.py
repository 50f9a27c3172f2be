"""The step runner (`neuroflow-recover exec`), run as a real subprocess on real tools; the tests
taking the `run` fixture also run it inside this process (click's CliRunner), where `make
mutate` can see which tests reach the runner's code."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import REPO
from neuroflow_recover import environment
from neuroflow_recover.classify.classes import NON_RETRYABLE
from neuroflow_recover.cli import cli
from neuroflow_recover.errors import NeuroflowError
from neuroflow_recover.step.attempts import (
    AttemptRecord,
    read_records,
    records_dir,
    write_record,
)
from neuroflow_recover.step.breaker import normalise_evidence
from neuroflow_recover.step.runner import parse_wildcards

PY = sys.executable
WAIT = 120  # generous: the CI machine is a loaded 2-core box


def write_config(workdir: Path, **breaker) -> None:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["error_handling"]["circuit_breaker"].update(breaker)
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture()
def wd(tmp_path):
    write_config(tmp_path)
    return tmp_path


def exec_args(rule="qsiprep_preprocess", subject="01", attempt=1, log="logs/step.log",
              expect=(), session=None, mem_mb=1000):
    args = ["exec", "--rule", rule, "--wildcards", f"subject={subject}"]
    if session:
        args += ["--wildcards", f"session={session}"]
    args += ["--attempt", str(attempt), "--log", log, "--mem-mb", str(mem_mb), "--runtime", "10",
             "--threads", "2", "--disk-mb", "500"]
    for path in expect:
        args += ["--expect", path]
    return args


def tool(code: str) -> list[str]:
    return ["--", PY, "-c", code]


def run_exec(workdir: Path, args: list[str], env=None, timeout=WAIT):
    full_env = clean_env(env)
    return subprocess.run(
        [PY, "-m", "neuroflow_recover.cli", *args], cwd=workdir, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def run_exec_in_process(workdir: Path, args: list[str], env=None, timeout=WAIT):
    """As run_exec, in this process: the same exit code, stdout and stderr."""
    unset = {k: None for k in os.environ if k.startswith("SLURM_")}
    with contextlib.chdir(workdir):
        result = CliRunner().invoke(cli, args, env={**unset, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(params=["subprocess", "in_process"])
def run(request):
    """The step runner as Snakemake starts it (a subprocess), and in this process."""
    return run_exec if request.param == "subprocess" else run_exec_in_process


def clean_env(extra=None) -> dict[str, str]:
    """This process's environment without SLURM variables (tests may run inside a job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, **(extra or {})}


def records(workdir, rule="qsiprep_preprocess", subject="01", session=None):
    wc = {"subject": subject, **({"session": session} if session else {})}
    return read_records(workdir, rule, wc)


def wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------- success


def test_success_streams_output_and_writes_a_record(wd, run):
    go = wd / "go"
    code = (
        "import os, sys, time\n"
        "print('first line', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "open('out.txt', 'w').write('data')\n"
        "print('last line')\n"
    )
    log = wd / "logs" / "step.log"

    def release_when_streamed():  # the tool only finishes once its first lines are in the log
        wait_for(lambda: log.exists() and "to stderr" in log.read_text(), "streamed lines")
        go.touch()

    helper = threading.Thread(target=release_when_streamed)
    helper.start()
    proc = run(wd, exec_args(expect=["out.txt"]) + tool(code))
    helper.join()
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.index("first line") < text.index("to stderr") < text.index("last line")
    assert "qsiprep_preprocess attempt 1 succeeded" in text
    assert "succeeded" in proc.stderr and proc.stdout == ""
    [rec] = records(wd)
    assert rec.error_class is None and rec.exit_code == 0 and not rec.skipped
    assert rec.stage == "qsiprep" and rec.wildcards == {"subject": "01"} and rec.attempt == 1
    assert rec.resources == {"mem_mb": 1000, "runtime": 10, "threads": 2, "disk_mb": 500}
    assert rec.tail == ["first line", "to stderr", "last line"]
    assert rec.log == "logs/step.log" and rec.host
    assert datetime.fromisoformat(rec.started_at) <= datetime.fromisoformat(rec.ended_at)


def test_tail_keeps_the_last_fifty_lines(wd, run):
    proc = run(wd, exec_args() + tool("for i in range(500): print('line', i)"))
    assert proc.returncode == 0
    [rec] = records(wd)
    assert len(rec.tail) == 50 and rec.tail[-1] == "line 499" and rec.tail[0] == "line 450"
    assert (wd / "logs" / "step.log").read_text().count("line ") == 500


# ----------------------------------------------------------------------------- failures


def test_exit_code_and_classification_are_recorded(wd, run):
    code = "import sys; print('allocating'); print('MemoryError', file=sys.stderr); sys.exit(5)"
    proc = run(wd, exec_args(subject="07") + tool(code), env={"SLURM_JOB_ID": "4242"})
    assert proc.returncode == 5
    [rec] = records(wd, subject="07")
    assert rec.exit_code == 5
    assert (rec.error_class, rec.resource, rec.retryable) == ("ResourceError", "memory", True)
    assert rec.evidence == "MemoryError" and rec.pattern_id
    assert rec.slurm_job_id == "4242"
    assert rec.tail == ["allocating", "MemoryError"]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("neuroflow:")]
    assert summary == [
        f"neuroflow: qsiprep_preprocess attempt 1 failed (exit 5): ResourceError/memory "
        f"[{rec.pattern_id}]: MemoryError"
    ]
    assert summary[0] in (wd / "logs" / "step.log").read_text()


def test_missing_and_empty_outputs_fail_with_the_agreed_message(wd, run):
    (wd / "empty.txt").touch()
    (wd / "good.txt").write_text("x")
    (wd / "outdir").mkdir()
    proc = run(
        wd,
        exec_args(expect=["good.txt", "outdir", "empty.txt", "missing.nii.gz"])
        + tool("print('all done')"),
    )
    assert proc.returncode == 1
    line = f"neuroflow: {Path(PY).name} exited 0 but did not write: empty.txt, missing.nii.gz"
    assert line in (wd / "logs" / "step.log").read_text().splitlines()
    [rec] = records(wd)
    assert rec.exit_code == 1 and rec.error_class == "ValidationError" and not rec.retryable
    assert rec.evidence == line and rec.tail[-1] == line
    assert "ValidationError" in proc.stderr


def test_a_cause_printed_by_the_tool_beats_the_missing_outputs_line(wd, run):
    proc = run(wd, exec_args(expect=["bids/sub-01"])
                    + tool("print('Need to process 0 study sessions')"))
    assert proc.returncode == 1
    [rec] = records(wd)
    assert rec.error_class == "ValidationError"
    assert rec.evidence == "Need to process 0 study sessions"
    assert rec.tail[-1].startswith("neuroflow: ") and "did not write: bids/sub-01" in rec.tail[-1]


def test_every_promised_output_is_checked_after_a_missing_one(tmp_path):
    from neuroflow_recover.step.runner import missing_outputs

    (tmp_path / "empty.txt").touch()
    (tmp_path / "good.txt").write_text("x")
    paths = [tmp_path / "missing.txt", tmp_path / "good.txt", tmp_path / "empty.txt"]
    assert missing_outputs(paths) == [tmp_path / "missing.txt", tmp_path / "empty.txt"]


def test_the_whole_log_of_the_attempt_is_classified_or_its_tail_when_unreadable(wd, monkeypatch):
    from neuroflow_recover.step import runner

    early = tool("import sys; print('MemoryError'); [print('cleanup', i) for i in range(80)]; sys.exit(1)")
    assert run_exec_in_process(wd, exec_args() + early).returncode == 1
    assert (records(wd)[-1].error_class, records(wd)[-1].evidence) == ("ResourceError", "MemoryError")

    def unreadable(*_args):
        raise OSError("gone")

    monkeypatch.setattr(runner, "read_head_and_tail", unreadable)
    last = tool("import sys; print('allocating'); print('MemoryError'); sys.exit(1)")
    assert run_exec_in_process(wd, exec_args(subject="02") + last).returncode == 1
    rec = records(wd, subject="02")[-1]
    assert (rec.error_class, rec.evidence) == ("ResourceError", "MemoryError")  # from the tail


def test_a_command_that_does_not_exist_is_recorded(wd, run):
    proc = run(wd, exec_args() + ["--", "no-such-tool-neuroflow", "--flag"])
    assert proc.returncode == 127
    [rec] = records(wd)
    assert rec.exit_code == 127 and rec.error_class == "ConfigurationError"
    assert "cannot start no-such-tool-neuroflow" in (wd / "logs" / "step.log").read_text()


def warnings_in(stderr: str) -> list[dict]:
    """The runner's structlog events in its stderr (JSON lines), without their timestamps."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [{k: v for k, v in event.items() if k != "timestamp"} for event in events]


def test_unreadable_config_does_not_block_the_tool(tmp_path, run):
    (tmp_path / "broken.yaml").write_text("stages: [unclosed\n")
    args = ["--configfile", "broken.yaml"] + exec_args() + tool("print('ran anyway')")
    proc = run(tmp_path, args)
    assert proc.returncode == 0, proc.stderr
    [warning] = warnings_in(proc.stderr)
    assert warning["event"] == "config not loaded; running with the shipped classifier defaults"
    assert warning["error"].startswith("ConfigError: ") and "broken.yaml" in warning["error"]
    assert "ran anyway" in (tmp_path / "logs" / "step.log").read_text()


def test_bad_arguments_are_clear_errors(wd):
    result = CliRunner().invoke(
        cli, ["-d", str(wd), "exec", "--rule", "r", "--wildcards", "subject", "--log", "l",
              "--mem-mb", "1", "--runtime", "1", "--threads", "1", "--", "true"]
    )
    assert result.exit_code == 1 and "NAME=VALUE" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(cli, ["exec", "--rule", "r", "--log", "l", "--mem-mb", "1",
                                      "--runtime", "1", "--threads", "1"])
    assert result.exit_code == 2 and "COMMAND" in result.output


# ----------------------------------------------------------------------------- fail fast


def test_non_retryable_failure_makes_the_next_attempt_fail_fast(wd, run):
    first = run(
        wd, exec_args(session="02")
        + tool("import sys; print('ERROR: FreeSurfer license file not found'); sys.exit(2)"),
    )
    assert first.returncode == 2
    marker = wd / "tool-ran"
    second = run(
        wd, exec_args(session="02", attempt=2) + tool(f"open({str(marker)!r}, 'w')"),
    )
    assert second.returncode == 3 and not marker.exists()  # the tool was never started
    earlier, skipped = records(wd, session="02")
    assert earlier.error_class == "ConfigurationError" and earlier.attempt == 1
    assert skipped.skipped and skipped.attempt == 2 and skipped.exit_code == 3
    assert (skipped.error_class, skipped.pattern_id, skipped.evidence, skipped.retryable) == (
        "ConfigurationError", earlier.pattern_id, earlier.evidence, False)
    line = ("neuroflow: not starting qsiprep_preprocess attempt 2: attempt 1 failed with "
            f"ConfigurationError: {earlier.evidence}")
    assert line in second.stderr
    assert (wd / "logs" / "step.log").read_text().splitlines()[-1] == line


def test_only_the_newest_record_of_the_previous_attempt_counts(wd, run):
    # an old invocation's attempt 1 was a configuration error; the newest attempt 1 succeeded
    write_record(wd, AttemptRecord(
        rule="qsiprep_preprocess", stage="qsiprep", wildcards={"subject": "01"}, attempt=1,
        started_at="2020-01-01T00:00:00+00:00", ended_at="2020-01-01T00:00:01+00:00",
        exit_code=2, error_class="ConfigurationError", retryable=False, resource=None,
        pattern_id="x", evidence="old"))
    assert run(wd, exec_args() + tool("import sys; sys.exit(9)")).returncode == 9
    marker = wd / "ran"
    proc = run(wd, exec_args(attempt=2) + tool(f"open({str(marker)!r}, 'w')"))
    assert proc.returncode == 0 and marker.exists()


def attempt_record(**fields) -> AttemptRecord:
    """A record of qsiprep_preprocess for subject 01, attempt 1 unless ``fields`` say otherwise."""
    return AttemptRecord(**{
        "rule": "qsiprep_preprocess", "stage": "qsiprep", "wildcards": {"subject": "01"}, "attempt": 1,
        "started_at": "2020-01-01T00:00:00+00:00", "ended_at": "2020-01-01T00:00:01+00:00",
        "exit_code": 1, "error_class": None, "retryable": None, "resource": None,
        "pattern_id": None, "evidence": None, **fields})


def _previous(wd, error_class, started_at="2020-01-01T00:00:00+00:00"):
    """An attempt 1 that failed with ``error_class``."""
    write_record(wd, attempt_record(error_class=error_class, retryable=error_class not in NON_RETRYABLE,
                                    pattern_id="p", evidence="it broke", started_at=started_at))


def test_a_skipped_attempt_is_deferred_only_after_a_transient_failure_under_run(wd):
    _previous(wd, "TransientError")
    marker = wd / "ran"
    deferred = run_exec_in_process(wd, exec_args(attempt=2, log="logs/new/deep/step.log")
                                   + tool(f"open({str(marker)!r}, 'w')"),
                                   env={"NEUROFLOW_DEFER_TRANSIENT": "1"})
    assert deferred.returncode == 3 and not marker.exists()
    skipped = records(wd)[-1]
    assert (skipped.skipped, skipped.deferred, skipped.retryable, skipped.error_class) == (
        True, True, True, "TransientError")
    assert skipped.tail == [
        "neuroflow: not starting qsiprep_preprocess attempt 2: attempt 1 failed with TransientError: it broke "
        "-- deferred: `neuroflow-recover run` re-runs transient failures after a backoff"]
    assert skipped.tail[0] in (wd / "logs" / "new" / "deep" / "step.log").read_text()
    _previous(wd, "RetryableError", started_at="2020-01-02T00:00:00+00:00")  # the newest attempt 1
    ran = run_exec_in_process(wd, exec_args(attempt=2) + tool(f"open({str(marker)!r}, 'w')"),
                              env={"NEUROFLOW_DEFER_TRANSIENT": "1"})
    assert ran.returncode == 0 and marker.exists()  # only transient failures are deferred
    marker.unlink()
    _previous(wd, "ConfigurationError", started_at="2020-01-03T00:00:00+00:00")
    failed_fast = run_exec_in_process(wd, exec_args(attempt=2) + tool(f"open({str(marker)!r}, 'w')"),
                                      env={"NEUROFLOW_DEFER_TRANSIENT": "1"})
    assert failed_fast.returncode == 3 and not marker.exists()
    assert (records(wd)[-1].deferred, records(wd)[-1].retryable) == (False, False)


def test_a_success_teaches_its_stage_and_a_summary_it_cannot_update_fails_nothing(wd, monkeypatch, logged):
    from neuroflow_recover.step import runner
    from neuroflow_recover.step.learning import Sample, read_samples

    # attempt 2 resumed attempt 1's work directory: both runs' time counts, the larger peak
    write_record(wd, attempt_record(peak_mem_mb=1200, elapsed_s=60.0))
    done = attempt_record(attempt=2, started_at="2020-01-01T01:00:00+00:00", exit_code=0,
                          peak_mem_mb=900, elapsed_s=120.0, resumed=True, resources={"threads": 2})
    write_record(wd, done)
    request = runner.StepRequest("qsiprep_preprocess", {"subject": "01"}, 2, wd / "log", ["tool"], workdir=wd)
    runner._learn(request, done)
    assert read_samples(wd, "qsiprep") == [
        Sample(1200, 3.0, 2, "qsiprep_preprocess/subject-01", done.ended_at)]

    def full(*_args):
        raise OSError("no space left")

    monkeypatch.setattr(runner, "add_sample", full)
    runner._learn(request, done)
    assert logged == [{"event": "usage summary not updated", "log_level": "warning", "error": "no space left"}]


def test_the_tools_usage_goes_into_the_record_and_slurms_accounting_when_larger(monkeypatch):
    from neuroflow_recover.step import runner
    from neuroflow_recover.step.tool import ToolRun
    from neuroflow_recover.step.usage import Usage

    accounted: list = []

    def sstat(job, step):
        assert (job, step) == ("7", "0")  # the job step's own accounting
        return accounted.pop()

    monkeypatch.setattr(runner, "sstat_max_rss_mb", sstat)
    run = ToolRun(0, [], 0, usage=Usage(peak_mem_mb=700, elapsed_s=12.5, cpu_s=3.0, source="process-tree"))
    rec = attempt_record()
    runner._measure(rec, ToolRun(0, [], 0), {})  # nothing measured
    assert (rec.peak_mem_mb, rec.elapsed_s, rec.cpu_s, rec.usage_source) == (None, None, None, None)
    for env in ({}, {"SLURM_JOB_ID": "7"}, {"SLURM_STEP_ID": "0"}):  # not a SLURM job step: no sstat
        runner._measure(rec, run, env)
        assert (rec.peak_mem_mb, rec.elapsed_s, rec.cpu_s, rec.usage_source) == (700, 12.5, 3.0, "process-tree")
    step = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}
    for sstat, expected in ((None, (700, "process-tree")), (700, (700, "process-tree")), (900, (900, "sstat"))):
        accounted.append(sstat)
        runner._measure(rec, run, step)
        assert (rec.peak_mem_mb, rec.usage_source, accounted) == (*expected, [])
    unmeasured = attempt_record()
    accounted.append(1)  # the tool's tree was not measured: any accounting is larger
    runner._measure(unmeasured, ToolRun(0, [], 0, usage=Usage(None, 1.0, 0.1, "process-tree")), step)
    assert (unmeasured.peak_mem_mb, unmeasured.usage_source) == (1, "sstat")


def test_finishing_records_the_attempt_and_learns_only_from_a_recorded_success(wd, monkeypatch, logged):
    from neuroflow_recover.step import runner
    from neuroflow_recover.step.learning import read_samples

    (wd / "logs").mkdir()
    request = runner.StepRequest("qsiprep_preprocess", {"subject": "01"}, 1, wd / "logs" / "step.log",
                                 ["tool"], workdir=wd)
    measured = {"peak_mem_mb": 500, "elapsed_s": 60.0, "resources": {"threads": 1}}
    failed = attempt_record(error_class="RetryableError", **measured)
    result = runner._finish(request, failed, 1, "it failed")
    assert (result.exit_code, result.record, result.summary) == (1, failed, "it failed")
    assert json.loads(result.record_path.read_text())["error_class"] == "RetryableError"
    assert read_samples(wd, "qsiprep") == []  # a failure teaches nothing
    assert runner._finish(request, attempt_record(attempt=2, exit_code=0, **measured), 0, "ok").record_path
    assert len(read_samples(wd, "qsiprep")) == 1

    def read_only(*_args):
        raise OSError("read-only file system")

    monkeypatch.setattr(runner, "write_record", read_only)
    result = runner._finish(request, attempt_record(attempt=3, exit_code=0, **measured), 0, "ok")
    assert (result.exit_code, result.record_path) == (0, None)
    assert len(read_samples(wd, "qsiprep")) == 1  # nothing learned from an attempt without its record
    assert logged == [{"event": "could not write the attempt record", "log_level": "error",
                       "error": "read-only file system"}]
    assert (wd / "logs" / "step.log").read_text().splitlines() == ["it failed", "ok", "ok"]


def test_a_work_directory_is_resumed_after_a_memory_failure_and_started_afresh_after_others(wd):
    def attempt(subject, number, code):
        args = exec_args(subject=subject, attempt=number, log=f"logs/{number}/{subject}/step.log")
        proc = run_exec_in_process(wd, args + ["--work", f"work-{subject}"] + tool(code))
        return proc, records(wd, subject=subject)[-1], (wd / f"logs/{number}/{subject}/step.log").read_text()

    fail = "import sys; open('work-{}/partial', 'w').write('x'); print({!r}); sys.exit(3)"
    resume = "import os, sys; sys.exit(0 if os.path.exists('work-{}/partial') else 9)"
    assert attempt("01", 1, fail.format("01", "MemoryError"))[1].resumed is False  # nothing to resume
    proc, rec, log = attempt("01", 2, resume.format("01"))
    assert (proc.returncode, rec.resumed) == (0, True)
    assert log.splitlines()[0] == ("neuroflow: resuming qsiprep_preprocess attempt 2 in its work "
                                   "directory work-01 (attempt 1 stopped for memory)")
    assert not (wd / "work-01").exists()  # removed after the success

    attempt("02", 1, fail.format("02", "worker lost its input"))
    (wd / "logs" / "2" / "02").mkdir()  # the log's directory may exist already
    proc, rec, log = attempt("02", 2, resume.format("02"))
    assert (proc.returncode, rec.resumed) == (9, False)
    assert log.splitlines()[0] == ("neuroflow: starting qsiprep_preprocess attempt 2 afresh: removed its "
                                   "work directory work-02 (attempt 1 failed with unknown: not resumable)")


def test_the_library_call_checks_its_request_and_uses_the_environment_it_is_given(wd):
    from neuroflow_recover.step.runner import StepRequest, run_step

    def request(attempt=2, command=("true",)):
        return StepRequest("qsiprep_preprocess", {"subject": "01"}, attempt, wd / "logs" / "step.log",
                           list(command), workdir=wd)

    with pytest.raises(NeuroflowError) as caught:
        run_step(request(command=()))
    assert str(caught.value) == "exec needs the tool's command line after --"
    with pytest.raises(NeuroflowError) as caught:
        run_step(request(attempt=0))
    assert str(caught.value) == "--attempt must be 1 or more, got 0"
    _previous(wd, "TransientError")
    result = run_step(request(), env={"NEUROFLOW_DEFER_TRANSIENT": "1"})  # not this process's environment
    assert (result.exit_code, result.record.deferred) == (3, True)
    sees = [PY, "-c", "import os, sys; sys.exit(0 if os.environ.get('NEUROFLOW_TEST') == 'given' else 9)"]
    assert run_step(request(command=sees), env={**os.environ, "NEUROFLOW_TEST": "given"}).exit_code == 0


def test_a_tool_gets_the_environment_without_the_safe_path_neuroflow_set_for_its_jobs(wd, run):
    """The main Snakemake sets PYTHONSAFEPATH for its jobs' own start-up; a tool's
    `python script.py` still imports the module beside its script. A user's own stays."""
    (wd / "helper_beside.py").write_text("ANSWER = 42\n")
    (wd / "script.py").write_text(
        "import os, sys\nimport helper_beside\n"
        "print('safe path:', os.environ.get('PYTHONSAFEPATH'))\n"
    )
    for_jobs = {}
    environment.keep_workdir_off_job_path(for_jobs)
    assert for_jobs == {"PYTHONSAFEPATH": "1", "NEUROFLOW_SAFE_PATH_SET": "1"}
    result = run(wd, exec_args() + ["--", PY, str(wd / "script.py")], env=for_jobs)
    assert result.returncode == 0, result.stderr
    assert "safe path: None" in (wd / "logs" / "step.log").read_text()
    users = {"PYTHONSAFEPATH": "1"}
    environment.keep_workdir_off_job_path(users)
    assert users == {"PYTHONSAFEPATH": "1"}
    result = run(wd, exec_args(log="logs/users.log") + ["--", PY, str(wd / "script.py")], env=users)
    assert result.returncode == 1 and "No module named 'helper_beside'" in (wd / "logs" / "users.log").read_text()


JOBSTEP = ["/x/snakemake/__main__.py", "--target-jobs", "a:b=1", "--mode", "remote"]


@pytest.mark.parametrize(
    "argv, starts",
    [
        (JOBSTEP + ["--executor", "slurm-jobstep", "--jobs", "1"], True),
        (JOBSTEP + ["--executor=slurm-jobstep"], True),
        (JOBSTEP + ["-e", "slurm-jobstep"], True),
        (JOBSTEP, False),  # the srun step's Snakemake: it runs the job's command
        (JOBSTEP + ["--executor", "local"], False),
        (JOBSTEP + ["--executor"], False),
    ],
)
def test_a_jobs_snakemake_that_starts_another_is_told_by_its_executor(argv, starts):
    assert environment.starts_a_snakemake_per_job(argv) is starts


def test_a_job_releases_the_safe_path_neuroflow_set_and_keeps_the_users():
    ours = {"HOME": "/h"}
    environment.keep_workdir_off_job_path(ours)
    environment.release_job_path(ours)
    assert ours == {"HOME": "/h"}
    users = {"PYTHONSAFEPATH": "1", "HOME": "/h"}
    environment.release_job_path(users)
    assert users == {"PYTHONSAFEPATH": "1", "HOME": "/h"}


def test_unreadable_earlier_records_only_warn(wd, monkeypatch):
    from neuroflow_recover.step import runner

    def unreadable(*_args):
        raise OSError("I/O error")

    monkeypatch.setattr(runner, "previous_record", unreadable)
    proc = run_exec_in_process(wd, exec_args(attempt=2) + tool("print('ran')"))
    assert proc.returncode == 0  # the tool ran as if there were no earlier attempt
    assert warnings_in(proc.stderr) == [
        {"event": "could not read earlier attempt records", "level": "warning", "error": "I/O error"}]


def test_while_the_tool_runs_a_marker_says_so_and_its_arguments_get_the_attempts_resources(wd):
    marker = wd / ".neuroflow" / "running" / "qsiprep_preprocess" / "subject-01.json"
    code = f"import os, sys; print('threads', sys.argv[1]); sys.exit(0 if os.path.exists({str(marker)!r}) else 9)"
    proc = run_exec_in_process(wd, exec_args() + tool(code) + ["@NEUROFLOW_THREADS@"])
    assert proc.returncode == 0 and not marker.exists()  # there while it ran, gone after
    assert "threads 2" in (wd / "logs" / "step.log").read_text().splitlines()


def _conclude(wd, run, runtime=10, env=None):
    """The runner's verdict on a tool run of qsiprep_preprocess attempt 1 (no breaker, no config)."""
    from neuroflow_recover.step import runner
    from neuroflow_recover.step.breaker import BreakerSettings, CircuitBreaker

    (wd / "logs").mkdir(exist_ok=True)
    req = runner.StepRequest("qsiprep_preprocess", {"subject": "01"}, 1, wd / "logs" / "step.log",
                             ["qsiprep", "--x"], resources={"runtime": runtime}, workdir=wd)
    rec = runner._base_record(req, "2026-01-01T00:00:00+00:00")
    return runner._conclude(req, rec, run, None, CircuitBreaker(wd, BreakerSettings(False, 3, 10)), env or {})


def test_a_signal_is_a_time_limit_only_when_it_is_sigterm_near_the_slurm_limit(wd):
    from neuroflow_recover.step.tool import ToolRun

    tail = [f"working {i}" for i in range(60)]

    def verdict(signal_name, elapsed=570.0, env=None):
        result = _conclude(wd, ToolRun(143, tail, 0, signal_name=signal_name, elapsed=elapsed),
                           env={"SLURM_JOB_ID": "77"} if env is None else env)
        rec = result.record
        assert (result.exit_code, rec.retryable, rec.tail) == (143, True, tail[-49:] + [rec.evidence])
        assert (wd / "logs" / "step.log").read_text().splitlines()[-2] == rec.evidence  # then the summary
        return rec.error_class, rec.resource, rec.pattern_id, rec.evidence

    # runtime 10 min: from 540 s on, a SIGTERM under SLURM is the time limit
    assert verdict("SIGTERM") == ("ResourceError", "runtime", "neuroflow:time_limit",
                                  "neuroflow: qsiprep stopped by SIGTERM DUE TO TIME LIMIT of SLURM job 77 "
                                  "after 570 s (runtime 10 min)")
    interrupted = ("TransientError", None, "neuroflow:signal")
    assert verdict("SIGINT") == (*interrupted, "neuroflow: qsiprep interrupted by SIGINT after 570 s (not a time limit)")
    assert verdict("SIGTERM", elapsed=530.0)[:3] == interrupted
    assert verdict("SIGTERM", env={})[:3] == interrupted


def test_a_success_says_how_long_and_how_much_memory(wd):
    from neuroflow_recover.step.tool import ToolRun
    from neuroflow_recover.step.usage import Usage

    usage = Usage(peak_mem_mb=700, elapsed_s=12.5, cpu_s=3.0, source="process-tree")
    result = _conclude(wd, ToolRun(0, ["done"], 0, elapsed=12.5, usage=usage))
    assert (result.exit_code, result.summary) == (
        0, "neuroflow: qsiprep_preprocess attempt 1 succeeded in 12.5 s (peak memory 700 MB)")


def test_without_a_matching_line_the_exit_code_decides(wd):
    from neuroflow_recover.step.tool import ToolRun

    rec = _conclude(wd, ToolRun(1, ["nothing we know"], 0)).record  # no log to read: its tail
    assert (rec.error_class, rec.pattern_id, rec.evidence) == ("NonRetryableError", "exit:1", "exit code 1")


def test_the_configs_own_patterns_classify_the_tools_failure(wd):
    config = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    config["error_handling"]["patterns"] = [{"id": "site_quota", "regex": "quota exceeded", "class": "TransientError"}]
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    code = "import sys; print('disk quota exceeded'); sys.exit(3)"
    assert run_exec_in_process(wd, exec_args() + tool(code)).returncode == 3
    assert (records(wd)[-1].pattern_id, records(wd)[-1].error_class) == ("site_quota", "TransientError")


def test_missing_outputs_end_the_tail_and_a_breaker_it_cannot_update_only_warns(wd, monkeypatch):
    from neuroflow_recover.step.breaker import CircuitBreaker

    def unwritable(*_args):
        raise OSError("no space left")

    monkeypatch.setattr(CircuitBreaker, "record_failure", unwritable)
    code = "[print('line', i) for i in range(60)]"
    proc = run_exec_in_process(wd, exec_args(expect=["out.txt"]) + tool(code))
    rec = records(wd)[-1]
    assert (proc.returncode, len(rec.tail), rec.tail[0], rec.error_class) == (1, 50, "line 11", "ValidationError")
    assert rec.tail[-1] == f"neuroflow: {Path(PY).name} exited 0 but did not write: out.txt"
    assert warnings_in(proc.stderr) == []  # a validation error has no breaker signature
    code = "import sys; print('psycopg2.OperationalError: Connection refused'); sys.exit(1)"
    proc = run_exec_in_process(wd, exec_args(subject="02") + tool(code))
    assert (proc.returncode, records(wd, subject="02")[-1].error_class) == (1, "TransientError")
    assert warnings_in(proc.stderr) == [
        {"event": "circuit breaker state not updated", "level": "warning", "error": "no space left"}]


# ----------------------------------------------------------------------------- repeated failures


def _unknown(message: str) -> list[str]:
    """A tool failing with a message no pattern knows and an exit code without a rule."""
    return tool(f"import sys; print('starting'); print({message!r}); sys.exit(3)")


def test_the_same_unknown_failure_twice_is_not_tried_a_third_time(wd, run):
    first = run(wd, exec_args() + _unknown("worker 4711 lost /data/sub-01/a.mif at 12:00:01"))
    assert first.returncode == 3
    [rec1] = records(wd)
    assert (rec1.error_class, rec1.pattern_id, rec1.evidence) == ("RetryableError", None, None)
    second = run(wd, exec_args(attempt=2) + _unknown("worker 815 lost /scratch/b/c.mif at 13:14:15"))
    assert second.returncode == 3  # the tool's own exit code
    rec2 = records(wd)[-1]
    assert (rec2.error_class, rec2.retryable, rec2.pattern_id) == (
        "NonRetryableError", False, "neuroflow:repeated")
    assert rec2.evidence == "same failure on attempts 1 and 2: worker 815 lost /scratch/b/c.mif at 13:14:15"
    assert "NonRetryableError [neuroflow:repeated]: same failure on attempts 1 and 2" in second.stderr
    assert warnings_in(second.stderr) == [{
        "event": "the same failure repeated: not retrying it", "level": "warning",
        "rule": "qsiprep_preprocess", "attempt": 2, "evidence": rec2.evidence}]
    marker = wd / "ran"
    third = run(wd, exec_args(attempt=3) + tool(f"open({str(marker)!r}, 'w')"))
    assert third.returncode == 3 and not marker.exists()
    assert "attempt 2 failed with NonRetryableError: same failure on attempts 1 and 2" in third.stderr


def test_different_unknown_failures_keep_their_retries(wd, run):
    run(wd, exec_args() + _unknown("worker lost its input"))
    run(wd, exec_args(attempt=2) + _unknown("checksum mismatch in block 7"))
    rec2 = records(wd)[-1]
    assert (rec2.error_class, rec2.retryable) == ("RetryableError", True)


def test_a_memory_failure_repeating_at_the_stage_cap_stops(wd, run):
    oom = tool("import sys; print('MemoryError'); sys.exit(1)")
    run(wd, exec_args(mem_mb=16000) + oom)
    run(wd, exec_args(attempt=2, mem_mb=24000) + oom)  # grown, below the cap: retried
    assert records(wd)[-1].error_class == "ResourceError"
    run(wd, exec_args(attempt=3, mem_mb=64000) + oom)  # config/config.yaml: max 64000
    rec3 = records(wd)[-1]
    assert (rec3.error_class, rec3.pattern_id) == ("NonRetryableError", "neuroflow:repeated")
    assert rec3.evidence == (
        "same failure on attempts 2 and 3 with memory at the stage's cap (64000): MemoryError")


# ----------------------------------------------------------------------------- records


def test_records_are_written_atomically_and_never_overwrite(tmp_path):
    rec = AttemptRecord(
        rule="qsiparc_parcellate", stage="qsiparc", wildcards={"subject": "1", "session": "a"},
        attempt=1, started_at="2026-11-28T12:00:00.000001+00:00", ended_at="",
        exit_code=1, error_class="RetryableError", retryable=True, resource=None,
        pattern_id=None, evidence="boom")
    paths = [write_record(tmp_path, rec) for _ in range(3)]
    assert len(set(paths)) == 3
    directory = records_dir(tmp_path, "qsiparc_parcellate", {"session": "a", "subject": "1"})
    assert directory.name == "session-a_subject-1"
    assert paths[0].name == "20261128T120000.000001Z-attempt-1.json"
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in paths)
    assert json.loads(paths[0].read_text())["evidence"] == "boom"
    (directory / "20261128T130000.000000Z-attempt-2.json").write_text('{"rule": "qsip')
    (directory / ".20261128T130000.000000Z-attempt-2.abc.tmp").write_text("half")
    got = read_records(tmp_path, "qsiparc_parcellate", {"subject": "1", "session": "a"})
    assert [r.evidence for r in got] == ["boom"] * 3


# ----------------------------------------------------------------------------- signals


def _start_sleeper(wd, env, runtime="10"):
    args = exec_args() + tool(
        "import time\nprint('ready', flush=True)\ntime.sleep(600)"
    )
    args[args.index("--runtime") + 1] = runtime
    proc = subprocess.Popen([PY, "-m", "neuroflow_recover.cli", *args], cwd=wd, env=clean_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = wd / "logs" / "step.log"
    wait_for(lambda: log.exists() and "ready" in log.read_text(), "the tool to start")
    return proc


def test_sigterm_is_forwarded_and_recorded_as_transient(wd):
    proc = _start_sleeper(wd, {})
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 143, err
    [rec] = records(wd)
    assert (rec.error_class, rec.pattern_id, rec.exit_code) == (
        "TransientError", "neuroflow:signal", 143)
    assert "interrupted by SIGTERM" in rec.evidence


def test_sigterm_at_the_slurm_time_limit_is_a_runtime_failure(wd):
    proc = _start_sleeper(
        wd, {"SLURM_JOB_ID": "77", "SLURM_JOB_END_TIME": str(int(time.time()))}
    )
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=WAIT)
    assert proc.returncode == 143
    [rec] = records(wd)
    assert (rec.error_class, rec.resource, rec.slurm_job_id) == ("ResourceError", "runtime", "77")
    assert "DUE TO TIME LIMIT" in rec.evidence
    assert rec.evidence in (wd / "logs" / "step.log").read_text()


def test_early_sigterm_under_slurm_is_not_a_time_limit(wd):
    end = str(int(time.time()) + 3600)
    proc = _start_sleeper(wd, {"SLURM_JOB_ID": "78", "SLURM_JOB_END_TIME": end})
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=WAIT)
    [rec] = records(wd)
    assert rec.error_class == "TransientError"


def test_a_sigterm_under_slurm_is_a_time_limit_only_near_the_jobs_end(monkeypatch):
    from types import SimpleNamespace

    from neuroflow_recover.step import runner

    monkeypatch.setattr(runner, "time", SimpleNamespace(time=lambda: 1000.0))  # the runner's clock
    limit, job = runner._slurm_time_limit, {"SLURM_JOB_ID": "5"}
    assert not limit({}, 10**6, 1)  # not under SLURM
    # the job's end time: a time limit from 90 s before it
    assert limit({**job, "SLURM_JOB_END_TIME": " 1090 "}, 0, None)
    assert not limit({**job, "SLURM_JOB_END_TIME": "1091"}, 10**6, 1)
    # without it: the attempt's runtime less 10 % (at least 30 s, at most 300 s)
    assert not limit({**job, "SLURM_JOB_END_TIME": "soon"}, 10**6, None)
    assert not limit(job, 10**6, 0)
    for minutes, margin in ((1, 30), (10, 60), (100, 300)):
        assert limit({**job, "SLURM_JOB_END_TIME": ""}, minutes * 60 - margin, minutes)
        assert not limit(job, minutes * 60 - margin - 0.5, minutes)


# ----------------------------------------------------------------------------- breaker


def _fail_like_the_others(run, wd, subject, attempt=1, host="10.0.0.7"):
    code = (f"import sys; print('psycopg2.OperationalError: Connection refused to {host}:"
            f"5432 for /data/sub-{subject}'); sys.exit(1)")
    return run(wd, exec_args(subject=subject, attempt=attempt) + tool(code))


def test_circuit_breaker_opens_once_and_skips_retries(tmp_path, run):
    write_config(tmp_path, threshold=3, window_minutes=10)
    first = _fail_like_the_others(run, tmp_path, "01", host="10.0.0.7")
    [rec] = records(tmp_path, subject="01")
    assert rec.error_class == "TransientError", rec  # the breaker applies to this class
    # below the threshold the retry still runs
    retry = _fail_like_the_others(run, tmp_path, "01", attempt=2)
    assert retry.returncode == 1 and not records(tmp_path, subject="01")[-1].skipped
    second = _fail_like_the_others(run, tmp_path, "02", host="10.0.0.8")
    third = _fail_like_the_others(run, tmp_path, "03", host="10.0.0.9")
    opened = [p for p in (first, retry, second, third) if "circuit breaker open" in p.stderr]
    assert opened == [third]  # announced once, by the job that opened it
    announcements = list((tmp_path / ".neuroflow" / "breaker").glob("*.json"))
    assert len(announcements) == 1
    assert json.loads(announcements[0].read_text())["jobs"] == 3
    [events] = list((tmp_path / ".neuroflow" / "breaker" / "events").iterdir())
    assert sorted(p.name for p in events.iterdir()) == [
        f"qsiprep_preprocess--subject-{n}" for n in ("01", "02", "03")]  # one per job

    marker = tmp_path / "ran"
    blocked = run(tmp_path, exec_args(subject="02", attempt=2)
                       + tool(f"open({str(marker)!r}, 'w')"))
    assert blocked.returncode == 3 and not marker.exists()
    assert "circuit breaker open: 3 jobs failed like this within 10 minutes" in blocked.stderr
    assert "neuroflow: not starting qsiprep_preprocess attempt 2: attempt 1 failed with TransientError" in (
        blocked.stderr)
    skipped = records(tmp_path, subject="02")[-1]
    assert skipped.skipped and skipped.error_class == "TransientError" and skipped.retryable
    assert "circuit breaker open" in skipped.tail[0]
    assert "circuit breaker open" not in blocked.stderr.split("not starting")[0]  # no re-announce

    # a job whose previous attempt failed differently is not blocked
    run(tmp_path, exec_args(subject="04") + tool("import sys; sys.exit(7)"))
    other = run(tmp_path, exec_args(subject="04", attempt=2)
                     + tool(f"open({str(marker)!r}, 'w')"))
    assert other.returncode == 0 and marker.exists()


def test_circuit_breaker_can_be_disabled(tmp_path, run):
    write_config(tmp_path, enabled=False, threshold=1)
    _fail_like_the_others(run, tmp_path, "01")
    marker = tmp_path / "ran"
    proc = run(tmp_path, exec_args(attempt=2) + tool(f"open({str(marker)!r}, 'w')"))
    assert proc.returncode == 0 and marker.exists()
    assert not (tmp_path / ".neuroflow" / "breaker").exists()


def test_signature_normalisation():
    a = normalise_evidence("Connection refused to 10.0.0.7:5432 for /data/sub-01/dwi.nii.gz")
    b = normalise_evidence("Connection  refused to 10.0.0.9:5432 for /scratch/x/sub-17/a.nii")
    assert a == b == "connection refused to #.#.#.#:# for <path>"


def test_breaker_ignores_failures_without_a_pattern_or_evidence():
    from neuroflow_recover.step.breaker import signature_of

    assert signature_of("RetryableError", None, None) is None
    assert signature_of("RetryableError", None, "  ") is None
    assert signature_of("ResourceError", "oom", "Killed") is None  # retries grow resources
    assert signature_of("ConfigurationError", "lic", "license") is None  # never retried
    assert signature_of("TransientError", "conn", "Connection refused") is not None


def _record_breaker_failure(args):
    workdir, subject = args
    from neuroflow_recover.step.breaker import BreakerSettings, CircuitBreaker, signature_of

    breaker = CircuitBreaker(workdir, BreakerSettings(True, 2, 10))
    sig = signature_of("TransientError", "conn", "Connection refused")
    return breaker.record_failure(sig, "qsiprep_preprocess", {"subject": subject}).announced


def test_breaker_is_announced_once_under_concurrency(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        jobs = [(str(tmp_path), f"{i:02d}") for i in range(12)]
        announced = pool.map(_record_breaker_failure, jobs)
    assert sum(announced) == 1
    breaker_dir = tmp_path / ".neuroflow" / "breaker"
    assert len(list(breaker_dir.glob("*.json"))) == 1
    [events] = list((breaker_dir / "events").iterdir())
    assert len(list(events.iterdir())) == 12 and not list(events.glob(".*"))


def test_breaker_closes_when_failures_age_out(tmp_path):
    from neuroflow_recover.step.breaker import BreakerSettings, CircuitBreaker, signature_of

    breaker = CircuitBreaker(tmp_path, BreakerSettings(True, 2, 10))
    sig = signature_of("TransientError", "conn", "Connection refused")
    breaker.record_failure(sig, "r", {"subject": "1"})
    assert breaker.record_failure(sig, "r", {"subject": "2"}).open
    old = time.time() - 11 * 60
    for path in (tmp_path / ".neuroflow" / "breaker").rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    assert not breaker.state(sig).open
    breaker.record_failure(sig, "r", {"subject": "3"})
    again = breaker.record_failure(sig, "r", {"subject": "4"})
    assert again.open and again.announced  # a new opening is announced again
    assert len(list((tmp_path / ".neuroflow" / "breaker").glob("*.closed"))) == 1


def test_fill_resources_puts_the_attempts_resources_into_the_tool_arguments():
    from neuroflow_recover.errors import NeuroflowError
    from neuroflow_recover.step.runner import fill_resources

    command = ["qsiprep", "--nprocs", "@NEUROFLOW_THREADS@", "--mem=@NEUROFLOW_MEM_MB@", "x"]
    assert fill_resources(command, {"threads": 4, "mem_mb": 8000}) == [
        "qsiprep", "--nprocs", "4", "--mem=8000", "x",
    ]  # fmt: skip
    with pytest.raises(NeuroflowError, match="@NEUROFLOW_DISK_MB@ but exec got no disk_mb"):
        fill_resources(["t", "@NEUROFLOW_DISK_MB@"], {"threads": 1})


def test_wildcards_are_name_value_pairs():
    assert parse_wildcards([]) == {}
    assert parse_wildcards(["subject=01", " session = 02 ", "desc=a=b"]) == {
        "subject": "01", "session": "02", "desc": "a=b"}
    for bad in ("subject", "=01", " =01"):
        with pytest.raises(NeuroflowError, match="--wildcards expects NAME=VALUE, got"):
            parse_wildcards([bad])
