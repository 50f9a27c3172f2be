"""stage_resources: exact numbers per attempt and cause, caps, blind mode, record selection."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from neuroflow_recover import resources
from neuroflow_recover.attempts import AttemptRecord, write_record
from neuroflow_recover.errors import ConfigError
from neuroflow_recover.resources import cause_of, grow, stage_resources

REPO = Path(__file__).resolve().parents[1]
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
