"""stage_resources: exact numbers per attempt and cause, caps, blind mode, record selection."""

from __future__ import annotations

import copy
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from neuroflow_recover.errors import ConfigError
from neuroflow_recover.step import resources
from neuroflow_recover.step.attempts import AttemptRecord, write_record
from neuroflow_recover.step.resources import cause_of, grow, stage_resources

RULE = "qsiprep_preprocess"
WC = {"subject": "01"}
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def cfg():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def record(workdir, attempt, error_class=None, resource=None, minutes=0, rule=RULE, wc=WC,
           skipped=False):
    start = (T0 + timedelta(minutes=minutes)).isoformat()
    rec = AttemptRecord(
        rule=rule, stage="qsiprep", wildcards=dict(wc), attempt=attempt, started_at=start,
        ended_at=start, exit_code=None if error_class is None else 1, error_class=error_class,
        retryable=None, resource=resource, pattern_id=None, evidence=None, skipped=skipped,
    )
    write_record(workdir, rec)
    return rec


def test_attempt_one_is_the_base_and_touches_no_file(cfg, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("attempt 1 must not read records")

    monkeypatch.setattr(resources, "read_records", boom)
    got = stage_resources(cfg, RULE, WC, 1, tmp_path / "does-not-exist")
    assert got == {"mem_mb": 16000, "runtime": 720, "threads": 8, "disk_mb": 50000}
    got["mem_mb"] = 1  # callers may mutate their copy
    assert stage_resources(cfg, RULE, WC, 1)["mem_mb"] == 16000


def test_memory_failure_grows_memory_only(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "memory")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 24000, "runtime": 720, "threads": 8, "disk_mb": 50000}


def test_time_limit_grows_runtime_only(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "runtime")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 16000, "runtime": 1080, "threads": 8, "disk_mb": 50000}


def test_disk_failure_grows_disk_only(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "disk")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 16000, "runtime": 720, "threads": 8, "disk_mb": 100000}


def test_transient_failure_keeps_resources(cfg, tmp_path):
    record(tmp_path, 1, "TransientError")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == stage_resources(cfg, RULE, WC, 1)


@pytest.mark.parametrize("error_class", ["RetryableError", "ResourceError"])
def test_unknown_cause_grows_memory_and_runtime(cfg, tmp_path, error_class):
    record(tmp_path, 1, error_class, None)
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 24000, "runtime": 1080, "threads": 8, "disk_mb": 50000}


def test_missing_record_is_an_unknown_cause(cfg, tmp_path):
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 24000, "runtime": 1080, "threads": 8, "disk_mb": 50000}


def test_non_retryable_keeps_resources(cfg, tmp_path):
    record(tmp_path, 1, "ConfigurationError")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path)["mem_mb"] == 16000


def test_growth_compounds_and_is_capped(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "memory", minutes=0)
    record(tmp_path, 2, "ResourceError", "memory", minutes=10)
    assert stage_resources(cfg, RULE, WC, 3, tmp_path)["mem_mb"] == 36000  # 16000 x 1.5^2
    record(tmp_path, 3, "ResourceError", "memory", minutes=20)
    record(tmp_path, 4, "ResourceError", "memory", minutes=30)
    assert stage_resources(cfg, RULE, WC, 4, tmp_path)["mem_mb"] == 54000  # x 1.5^3
    assert stage_resources(cfg, RULE, WC, 5, tmp_path)["mem_mb"] == 64000  # 81000 capped


def test_mixed_causes_compound_per_resource(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "memory", minutes=0)
    record(tmp_path, 2, "ResourceError", "runtime", minutes=10)
    assert stage_resources(cfg, RULE, WC, 3, tmp_path) == {
        "mem_mb": 24000, "runtime": 1080, "threads": 8, "disk_mb": 50000}


def test_newest_record_of_the_previous_attempt_wins(cfg, tmp_path):
    # an older invocation: attempt 1 ran out of memory; this invocation: attempt 1 timed out
    record(tmp_path, 1, "ResourceError", "memory", minutes=0)
    record(tmp_path, 2, "ResourceError", "memory", minutes=10)
    record(tmp_path, 1, "ResourceError", "runtime", minutes=60)
    got = stage_resources(cfg, RULE, WC, 2, tmp_path)
    assert (got["mem_mb"], got["runtime"]) == (16000, 1080)
    # attempt 3 of the new invocation must not count the old invocation's attempt 2
    record(tmp_path, 2, "TransientError", minutes=70)
    got = stage_resources(cfg, RULE, WC, 3, tmp_path)
    assert (got["mem_mb"], got["runtime"]) == (16000, 1080)


def test_records_of_other_jobs_are_ignored(cfg, tmp_path):
    record(tmp_path, 1, "ResourceError", "memory", wc={"subject": "02"})
    record(tmp_path, 1, "ResourceError", "memory", rule="qsirecon_reconstruct",
           wc={"subject": "01", "session": "01"})
    record(tmp_path, 1, "TransientError")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path)["mem_mb"] == 16000


def test_blind_mode_grows_everything_without_records(cfg, tmp_path, monkeypatch):
    cfg["error_handling"]["cause_aware"] = False
    record(tmp_path, 1, "TransientError")  # ignored in blind mode
    assert stage_resources(cfg, RULE, WC, 2, tmp_path) == {
        "mem_mb": 24000, "runtime": 1080, "threads": 8, "disk_mb": 100000}
    assert stage_resources(cfg, RULE, WC, 3, tmp_path) == {
        "mem_mb": 36000, "runtime": 1620, "threads": 8, "disk_mb": 200000}
    assert stage_resources(cfg, RULE, WC, 4, tmp_path) == {
        "mem_mb": 54000, "runtime": 2430, "threads": 8, "disk_mb": 200000}


def test_threads_follow_their_growth_factor(cfg, tmp_path):
    cfg = copy.deepcopy(cfg)
    cfg["stages"]["qsiprep"]["growth"]["threads"] = 1.5
    record(tmp_path, 1, "ResourceError", "runtime")
    assert stage_resources(cfg, RULE, WC, 2, tmp_path)["threads"] == 12
    record(tmp_path, 1, "ResourceError", "memory", minutes=5)
    assert stage_resources(cfg, RULE, WC, 2, tmp_path)["threads"] == 8


def test_other_stages_use_their_own_settings(cfg, tmp_path):
    wc = {"subject": "01", "session": "02"}
    record(tmp_path, 1, "ResourceError", "memory", rule="heudiconv_convert", wc=wc)
    got = stage_resources(cfg, "heudiconv_convert", wc, 2, tmp_path)
    assert got == {"mem_mb": 4000, "runtime": 30, "threads": 1, "disk_mb": 2000}


def test_unknown_rule_and_bad_config_are_clear_errors(cfg):
    with pytest.raises(ConfigError, match="no stage"):
        stage_resources(cfg, "nope", WC, 1)
    del cfg["stages"]["qsiprep"]["resources"]["mem_mb"]
    with pytest.raises(ConfigError, match="stages.qsiprep.resources"):
        stage_resources(cfg, RULE, WC, 1)


def test_stage_override_for_custom_rules(cfg):
    got = stage_resources(cfg, "my_rule", WC, 1, stage="qsiparc")
    assert got["mem_mb"] == 4000


def test_grow_is_pure_and_rounds():
    base = {"mem_mb": 1000, "runtime": 7, "threads": 1, "disk_mb": 10}
    growth = {"mem_mb": 1.3, "runtime": 1.5, "threads": 1.0, "disk_mb": 2.0}
    got = grow(base, growth, {}, ["memory", "runtime", "runtime"])
    assert got == {"mem_mb": 1300, "runtime": 16, "threads": 1, "disk_mb": 10}  # 7*2.25=15.75


def test_cause_of():
    def rec(**kw):
        base = dict(rule=RULE, stage="qsiprep", wildcards=WC, attempt=1, started_at="",
                    ended_at="", exit_code=1, error_class=None, retryable=None,
                    resource=None, pattern_id=None, evidence=None)
        base.update(kw)
        return AttemptRecord(**base)

    assert cause_of(None) == "unknown"
    assert cause_of(rec(error_class="ResourceError", resource="disk")) == "disk"
    assert cause_of(rec(error_class="ValidationError")) == "final"
    assert cause_of(rec(error_class="ResourceError", skipped=True, resource="memory")) == "final"
    assert cause_of(rec(error_class=None)) == "unknown"


# ------------------------------------------------- attempts killed by SLURM (no record)

FIXTURES = REPO / "tests" / "fixtures" / "logs"
OOM_LOG = FIXTURES / "slurm_keep_going_mixed/.snakemake/slurm_logs/rule_probe_oom/01_2/37.log"
TIMEOUT_LOG = FIXTURES / "slurm_timeout/.snakemake/slurm_logs/rule_probe_timeout/01_1/29.log"
HEADER_ONLY_LOG = FIXTURES / "slurm_fail/.snakemake/slurm_logs/rule_probe_fail/01_1/27.log"
RECON = "qsirecon_reconstruct"
RECON_WC = {"subject": "01", "session": "2"}  # Snakemake's order -> directory 01_2
RECON_BASE = {"mem_mb": 16000, "runtime": 480, "threads": 8, "disk_mb": 30000}


@pytest.fixture(autouse=True)
def _not_in_a_slurm_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def slurm_log(workdir, fixture, job_id, minutes, rule=RECON, values="01_2",
              logdir=".snakemake/slurm_logs"):
    """A real fixture SLURM log at the plugin's path, modified at T0 + minutes."""
    path = Path(workdir) / logdir / f"rule_{rule}" / values / f"{job_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fixture.read_bytes())
    stamp = (T0 + timedelta(minutes=minutes)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def recon(cfg, workdir, attempt, **kw):
    return stage_resources(cfg, RECON, RECON_WC, attempt, workdir, **kw)


def test_slurm_memory_kill_without_record_grows_memory_only(cfg, tmp_path):
    slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000}


def test_slurm_time_limit_without_record_grows_runtime_only(cfg, tmp_path):
    slurm_log(tmp_path, TIMEOUT_LOG, 29, minutes=5)
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "runtime": 720}


def test_log_without_a_cause_stays_blind(cfg, tmp_path):
    slurm_log(tmp_path, HEADER_ONLY_LOG, 27, minutes=5)
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}


def test_newest_log_is_the_previous_attempt(cfg, tmp_path):
    slurm_log(tmp_path, TIMEOUT_LOG, 29, minutes=5)
    slurm_log(tmp_path, OOM_LOG, 37, minutes=10)
    got = recon(cfg, tmp_path, 2)
    assert (got["mem_mb"], got["runtime"]) == (24000, 480)


def test_trailing_attempts_without_records_each_use_their_log(cfg, tmp_path):
    slurm_log(tmp_path, OOM_LOG, 31, minutes=5)
    slurm_log(tmp_path, OOM_LOG, 37, minutes=10)
    assert recon(cfg, tmp_path, 3) == {**RECON_BASE, "mem_mb": 36000}  # 16000 x 1.5^2
    # attempt 1 timed out, attempt 2 ran out of memory
    slurm_log(tmp_path, TIMEOUT_LOG, 31, minutes=5)
    assert recon(cfg, tmp_path, 3) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}


def test_record_then_killed_attempt(cfg, tmp_path):
    # attempt 1 wrote a record (time limit), attempt 2 was killed for memory without one
    record(tmp_path, 1, "ResourceError", "runtime", minutes=0, rule=RECON, wc=RECON_WC)
    slurm_log(tmp_path, OOM_LOG, 37, minutes=10)
    assert recon(cfg, tmp_path, 3) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}


def test_log_older_than_the_newest_record_is_not_used(cfg, tmp_path):
    # an older run: its SLURM log, then its attempt-2 record; this run's attempt 1 left
    # neither a record nor (yet) a log
    slurm_log(tmp_path, OOM_LOG, 12, minutes=5)
    record(tmp_path, 2, "TransientError", minutes=10, rule=RECON, wc=RECON_WC)
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}
    slurm_log(tmp_path, TIMEOUT_LOG, 40, minutes=20)  # this run's attempt 1
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "runtime": 720}


def test_log_of_the_own_slurm_job_is_skipped(cfg, tmp_path, monkeypatch):
    # inside the SLURM job of attempt 2, Snakemake evaluates attempt 2's resources again:
    # its own (newest, still growing) log is not attempt 1's
    slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    slurm_log(tmp_path, HEADER_ONLY_LOG, 41, minutes=10)
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000}
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # e.g. a main Snakemake run inside sbatch
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}


def test_log_of_a_job_a_record_names_is_skipped(cfg, tmp_path):
    # attempt 1: memory (record); attempt 2: transient (record naming SLURM job 41, whose
    # log is written after the record); attempt 3: no record and no log
    record(tmp_path, 1, "ResourceError", "memory", minutes=-10, rule=RECON, wc=RECON_WC)
    second = record(tmp_path, 2, "TransientError", minutes=-5, rule=RECON, wc=RECON_WC)
    second.slurm_job_id = "41"
    for old in (tmp_path / ".neuroflow").rglob("*attempt-2.json"):
        old.unlink()
    write_record(tmp_path, second)
    slurm_log(tmp_path, TIMEOUT_LOG, 41, minutes=-4)
    # attempt 3 unknown (not 41's time limit): mem 16000 x 1.5^2, runtime 480 x 1.5
    assert recon(cfg, tmp_path, 4) == {**RECON_BASE, "mem_mb": 36000, "runtime": 720}
    slurm_log(tmp_path, OOM_LOG, 45, minutes=5)  # attempt 3's log appears
    assert recon(cfg, tmp_path, 4) == {**RECON_BASE, "mem_mb": 36000}


def test_wildcard_values_follow_the_given_order(cfg, tmp_path):
    slurm_log(tmp_path, OOM_LOG, 37, minutes=5)  # directory 01_2
    other_order = {"session": "2", "subject": "01"}  # would be 2_01: no log there
    got = stage_resources(cfg, RECON, other_order, 2, tmp_path)
    assert (got["mem_mb"], got["runtime"]) == (24000, 720)
    assert resources.slurm_log_dir(tmp_path, RECON, RECON_WC) == (
        tmp_path / ".snakemake" / "slurm_logs" / f"rule_{RECON}" / "01_2")
    assert resources.slurm_log_dir("w", "r", {}).as_posix() == "w/.snakemake/slurm_logs/rule_r"


def test_custom_slurm_logdir(cfg, tmp_path):
    slurm_log(tmp_path, OOM_LOG, 37, minutes=5, logdir="cluster/logs")
    assert recon(cfg, tmp_path, 2)["runtime"] == 720  # default logdir: nothing there
    assert recon(cfg, tmp_path, 2, slurm_logdir="cluster/logs") == {
        **RECON_BASE, "mem_mb": 24000}
    absolute = tmp_path / "cluster" / "logs"
    assert recon(cfg, tmp_path / "elsewhere", 2, slurm_logdir=absolute)["mem_mb"] == 24000


def test_only_the_tail_of_a_big_log_is_classified(cfg, tmp_path):
    path = slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    filler = b"probe: still working\n" * (resources.SLURM_TAIL_BYTES // 10)
    path.write_bytes(OOM_LOG.read_bytes() + filler)  # the kill is far before the tail
    stamp = (T0 + timedelta(minutes=5)).timestamp()
    os.utime(path, (stamp, stamp))
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000, "runtime": 720}
    path.write_bytes(filler + OOM_LOG.read_bytes())
    os.utime(path, (stamp, stamp))
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "mem_mb": 24000}


def test_user_patterns_classify_slurm_logs(cfg, tmp_path):
    path = slurm_log(tmp_path, HEADER_ONLY_LOG, 27, minutes=5)
    cfg["error_handling"]["patterns"] = [
        {"id": "site_disk", "regex": "probe: is_main_process", "class": "ResourceError",
         "resource": "disk"}]
    assert path.is_file()
    assert recon(cfg, tmp_path, 2) == {**RECON_BASE, "disk_mb": 60000}


def test_record_of_the_previous_attempt_wins_over_logs(cfg, tmp_path):
    record(tmp_path, 1, "TransientError", minutes=0, rule=RECON, wc=RECON_WC)
    slurm_log(tmp_path, OOM_LOG, 37, minutes=10)  # attempt 1's own log, written after it
    assert recon(cfg, tmp_path, 2) == RECON_BASE


def test_no_slurm_lookup_at_attempt_one_or_in_blind_mode(cfg, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("no SLURM log lookup expected")

    slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    monkeypatch.setattr(resources, "slurm_log_causes", boom)
    assert recon(cfg, tmp_path, 1) == RECON_BASE
    cfg["error_handling"]["cause_aware"] = False
    assert recon(cfg, tmp_path, 2)["runtime"] == 720


def test_slurm_log_causes_reports_what_it_used(cfg, tmp_path):
    path = slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    (path.parent / "notes.txt").write_text("exceeded memory limit\n")
    (path.parent / "99.log").mkdir()
    found = resources.slurm_log_causes(cfg, RECON, RECON_WC, [], 3, tmp_path)
    assert [(f.path, f.slurm_job_id, f.cause) for f in found] == [(path, "37", "memory")]
    assert found[0].classification.pattern_id == "slurm_exceeded_memory"
    assert resources.slurm_log_causes(cfg, RECON, RECON_WC, [], 0, tmp_path) == []
    assert resources.slurm_log_causes(cfg, RECON, {"subject": "09"}, [], 1, tmp_path) == []


# ----------------------------------------------------------------------------- repeated failures


def failed(attempt, error_class, evidence=None, tail=(), resource=None, exit_code=3, skipped=False):
    return AttemptRecord(
        rule=RULE, stage="qsiprep", wildcards=dict(WC), attempt=attempt, started_at="",
        ended_at="", exit_code=exit_code, error_class=error_class, retryable=True,
        resource=resource, pattern_id=None, evidence=evidence, tail=list(tail), skipped=skipped,
    )


def test_failure_line_is_the_evidence_else_the_last_output_line_else_the_exit_code():
    assert resources.failure_line(failed(1, "RetryableError", " boom ")) == "boom"
    assert resources.failure_line(failed(1, "RetryableError", None, ["a", "b 7", "  "])) == "b 7"
    assert resources.failure_line(failed(1, "RetryableError", None, [], exit_code=139)) == "exit code 139"
    assert resources.failure_line(failed(1, "RetryableError", None, [], exit_code=None)) is None


def test_an_unknown_failure_repeats_when_its_masked_line_is_the_same():
    one = failed(1, "RetryableError", tail=["job 11 died at 10:00:01 in /scratch/a/b.nii"])
    two = failed(2, "RetryableError", tail=["job 9 died at 11:12:13 in /work/x.nii"])
    other = failed(2, "RetryableError", tail=["checksum mismatch"])
    assert resources.repeated_failure(one, two, at_cap=False)
    assert not resources.repeated_failure(one, other, at_cap=False)
    assert not resources.repeated_failure(None, two, at_cap=False)
    assert not resources.repeated_failure(failed(1, "RetryableError", "x", skipped=True),
                                          failed(2, "RetryableError", "x"), at_cap=False)
    # an unknown failure after a known one (or the reverse) is not a repeat
    assert not resources.repeated_failure(failed(1, "TransientError", "x"),
                                          failed(2, "RetryableError", "x"), at_cap=False)


def test_a_resource_failure_repeats_only_at_the_cap():
    one = failed(1, "ResourceError", "MemoryError", resource="memory")
    two = failed(2, "ResourceError", "MemoryError", resource="memory")
    assert not resources.repeated_failure(one, two, at_cap=False)
    assert resources.repeated_failure(one, two, at_cap=True)
    runtime = failed(2, "ResourceError", "MemoryError", resource="runtime")
    assert not resources.repeated_failure(one, runtime, at_cap=True)
    # transient and non-retryable failures have their own rules
    assert not resources.repeated_failure(failed(1, "TransientError", "x"),
                                          failed(2, "TransientError", "x"), at_cap=True)


def test_at_stage_cap(cfg):
    at = resources.at_stage_cap
    assert at(cfg, "qsiprep", "memory", {"mem_mb": 64000}) == 64000
    assert at(cfg, "qsiprep", "memory", {"mem_mb": 63999}) is None
    assert at(cfg, "qsiprep", "runtime", {"runtime": 2880}) == 2880
    assert at(cfg, "qsiprep", None, {"mem_mb": 64000}) is None
    assert at(None, "qsiprep", "memory", {"mem_mb": 64000}) is None
    assert at({"stages": {}}, "qsiprep", "memory", {"mem_mb": 64000}) is None  # no settings


# ------------------------------------------------------------- decisions in detail (docs/testing.md)
def test_a_cause_from_a_slurm_log_is_logged_with_where_it_came_from(cfg, tmp_path, logged):
    path = slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    assert recon(cfg, tmp_path, 2)["mem_mb"] == 24000
    assert logged == [{
        "event": "attempt left no record; cause from its SLURM log", "log_level": "info",
        "rule": RECON, "wildcards": RECON_WC, "attempt": 1, "slurm_log": str(path),
        "cause": "memory", "error_class": "ResourceError", "pattern_id": "slurm_exceeded_memory"}]


def test_an_unreadable_slurm_log_stops_the_lookup_and_says_so(cfg, tmp_path, logged, monkeypatch):
    slurm_log(tmp_path, OOM_LOG, 36, minutes=4)
    newest = slurm_log(tmp_path, OOM_LOG, 37, minutes=5)

    def unreadable(path, size):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(resources, "read_tail", unreadable)
    # the newest log (the last attempt's) cannot be read: the older one must not stand in
    assert resources.slurm_log_causes(cfg, RECON, RECON_WC, [], 2, tmp_path) == []
    assert logged == [{
        "event": "cannot read SLURM log", "log_level": "warning", "path": str(newest),
        "error": f"[Errno 13] Permission denied: '{newest}'"}]


def test_no_slurm_log_is_listed_when_no_attempt_lacks_a_record(cfg, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("no directory listing expected")

    monkeypatch.setattr(resources, "new_slurm_logs", boom)
    assert resources.slurm_log_causes(cfg, RECON, RECON_WC, [], 0, tmp_path) == []


def test_the_working_directory_is_the_default_workdir(cfg, tmp_path, monkeypatch):
    slurm_log(tmp_path, OOM_LOG, 37, minutes=5)
    monkeypatch.chdir(tmp_path)
    # memory only: an unknown cause (no log found) would grow the runtime too
    assert stage_resources(cfg, RECON, RECON_WC, 2) == {**RECON_BASE, "mem_mb": 24000}
    assert resources.chain_causes(cfg, RECON, RECON_WC, 2) == ["memory"]
    assert [c.cause for c in resources.slurm_log_causes(cfg, RECON, RECON_WC, [], 1)] == ["memory"]


def test_a_plan_gives_the_first_attempt_from_the_stage_base(cfg, tmp_path):
    class Plan:
        def first_attempt(self, stage, base):
            return {**base, "mem_mb": base["mem_mb"] + 1000}

        def adjust(self, grown, attempt, maximum):
            return grown

    assert recon(cfg, tmp_path, 1, plan=Plan()) == {**RECON_BASE, "mem_mb": 17000}


def test_a_growth_factor_missing_from_the_config_keeps_the_resource():
    base = {"mem_mb": 1000, "runtime": 60, "threads": 2, "disk_mb": 500}
    assert grow(base, {}, {}, ["memory"]) == base
    assert grow(base, {"mem_mb": 2.0}, {}, ["memory"]) == {**base, "mem_mb": 2000}


def test_cause_aware_is_the_default():
    assert resources.is_cause_aware({}) is True
    assert resources.is_cause_aware({"error_handling": {}}) is True
    assert resources.is_cause_aware({"error_handling": {"cause_aware": False}}) is False


def test_the_stage_cap_needs_a_config_a_known_resource_and_its_value(cfg):
    cap = cfg["stages"]["qsiprep"]["max"]["mem_mb"]
    assert resources.at_stage_cap(cfg, "qsiprep", "memory", {"mem_mb": cap}) == cap
    assert resources.at_stage_cap(cfg, "qsiprep", "memory", {"runtime": 10}) is None
    assert resources.at_stage_cap(None, "qsiprep", "memory", {"mem_mb": cap}) is None
    assert resources.at_stage_cap(cfg, "qsiprep", None, {"mem_mb": cap}) is None


def test_logs_count_as_new_after_the_newest_end_or_start_of_a_record():
    def rec(started, ended):
        return AttemptRecord(
            rule=RULE, stage="qsiprep", wildcards=dict(WC), attempt=1, started_at=started,
            ended_at=ended, exit_code=1, error_class=None, retryable=None, resource=None,
            pattern_id=None, evidence=None)

    start, end = T0.isoformat(), (T0 + timedelta(minutes=30)).isoformat()
    assert resources._newest_record_time([rec(start, end)]) == (T0 + timedelta(minutes=30)).timestamp()
    assert resources._newest_record_time([rec(start, "")]) == T0.timestamp()
    assert resources._newest_record_time([rec("", end)]) == (T0 + timedelta(minutes=30)).timestamp()
    assert resources._newest_record_time([]) is None


def test_a_stage_without_integer_resources_is_named():
    cfg = {"stages": {"qsiprep": {"resources": {"mem_mb": "lots"}, "growth": {}, "max": {}}}}
    with pytest.raises(ConfigError, match=r"^config stages\.qsiprep\.resources must set "
                       r"mem_mb, runtime, threads, disk_mb as integers \("):
        resources.stage_settings(cfg, "qsiprep")
