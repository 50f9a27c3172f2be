"""The circuit breaker's library, in process: signatures, the window, the one announcement.

The step runner's use of it (a real subprocess per attempt) is in test_stepexec.py; these
tests pin each decision down so that `make mutate` sees them (docs/testing.md).
"""

from __future__ import annotations

import json
import os

import pytest

from neuroflow_recover.step.breaker import (
    BREAKER_DIR,
    BreakerSettings,
    CircuitBreaker,
    Signature,
    announcements,
    normalise_evidence,
    signature_of,
)

NOW = 1_700_000_000.0  # a fixed "now" (in the past): windows come from file times, never sleeps
SIG = Signature("TransientError", "nfs_stale", "stale file handle <path>")


def settings(threshold=3, window_minutes=10.0, enabled=True):
    return BreakerSettings(enabled=enabled, threshold=threshold, window_minutes=window_minutes)


def event_file(tmp_path, sig, name, mtime):
    events = tmp_path / BREAKER_DIR / "events" / sig.key
    events.mkdir(parents=True, exist_ok=True)
    path = events / name
    path.write_text("{}")
    os.utime(path, (mtime, mtime))
    return path


# ------------------------------------------------------------------------------ settings
def test_settings_default_without_a_section():
    assert BreakerSettings.from_config(None) == BreakerSettings(True, 3, 10.0)
    assert BreakerSettings.from_config({"error_handling": None}) == BreakerSettings(True, 3, 10.0)
    assert BreakerSettings.from_config({"error_handling": {"circuit_breaker": None}}) == (
        BreakerSettings(True, 3, 10.0)
    )


def test_settings_read_from_config_and_threshold_is_at_least_one():
    cfg = {"error_handling": {"circuit_breaker": {
        "enabled": False, "threshold": "5", "window_minutes": "2.5"}}}
    assert BreakerSettings.from_config(cfg) == BreakerSettings(False, 5, 2.5)
    zero = {"error_handling": {"circuit_breaker": {"threshold": 0}}}
    assert BreakerSettings.from_config(zero).threshold == 1


# ---------------------------------------------------------------------------- signatures
def test_normalise_evidence_strips_what_differs_between_jobs():
    text = "Stale  file handle: /data/sub-01/ses-02/dwi.nii.gz id DEADBEEF01 after 12 s\n"
    assert normalise_evidence(text) == "stale file handle: <path> id <hex> after # s"
    assert normalise_evidence(None) == ""
    assert normalise_evidence("x" * 400) == "x" * 300


def test_signature_only_for_classes_whose_retry_repeats_the_attempt():
    assert signature_of("ResourceError", "oom", "Killed") is None
    assert signature_of("NonRetryableError", "corrupt_dicom", "bad") is None
    assert signature_of(None, "x", "y") is None
    assert signature_of("RetryableError", "p", "Error 7") == Signature("RetryableError", "p", "error #")


def test_signature_needs_a_pattern_or_evidence():
    assert signature_of("TransientError", None, "   ") is None
    assert signature_of("TransientError", None, None) is None
    assert signature_of("TransientError", "p", None) == Signature("TransientError", "p", "")
    assert signature_of("TransientError", None, "boom") == Signature("TransientError", None, "boom")


def test_signature_key_and_description():
    a = signature_of("TransientError", "p", "refused 10.0.0.7:5432")
    b = signature_of("TransientError", "p", "refused 10.0.0.9:6543")
    assert a.key == b.key and len(a.key) == 16
    assert a.key != signature_of("RetryableError", "p", "refused 1").key
    assert a.key != signature_of("TransientError", "q", "refused 1").key
    assert Signature("TransientError", None, "e").key != Signature("TransientError", "", "f").key
    assert a.describe() == "TransientError (p): refused #.#.#.#:#"
    assert Signature("TransientError", None, "e").describe() == "TransientError (no pattern): e"


# -------------------------------------------------------------------------------- window
def test_recent_jobs_counts_jobs_within_the_window_only(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(window_minutes=10))
    assert breaker.recent_jobs(SIG, NOW) == 0  # no events directory yet
    event_file(tmp_path, SIG, "a--subject-01", NOW - 600)  # exactly at the horizon: counts
    event_file(tmp_path, SIG, "a--subject-02", NOW - 601)  # older: does not
    event_file(tmp_path, SIG, ".tmp123", NOW)  # a write in progress: does not
    event_file(tmp_path, SIG, "a--subject-03", NOW)
    assert breaker.recent_jobs(SIG, NOW) == 2


def test_state_opens_at_the_threshold(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=2, window_minutes=10))
    event_file(tmp_path, SIG, "a--subject-01", NOW)
    event_file(tmp_path, SIG, "a--subject-00", NOW - 601)  # aged out of the window
    one = breaker.state(SIG, NOW)
    assert (one.open, one.jobs, one.threshold, one.window_minutes) == (False, 1, 2, 10)
    event_file(tmp_path, SIG, "a--subject-02", NOW)
    two = breaker.state(SIG, NOW)
    assert (two.open, two.jobs, two.announced) == (True, 2, False)


def test_a_disabled_breaker_is_never_open_and_writes_nothing(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=1, enabled=False))
    event_file(tmp_path, SIG, "a--subject-01", NOW)
    assert (breaker.state(SIG, NOW).open, breaker.state(SIG, NOW).jobs) == (False, 0)
    (tmp_path / BREAKER_DIR).rename(tmp_path / "moved")
    state = breaker.record_failure(SIG, "qsiprep_preprocess", {"subject": "01"})
    assert (state.signature, state.open, state.jobs, state.announced) == (SIG, False, 0, False)
    assert not (tmp_path / BREAKER_DIR).exists()


# ------------------------------------------------------------------------------- updates
def test_record_failure_counts_a_job_once_and_records_what_failed(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=3))
    breaker.record_failure(SIG, "qsiprep_preprocess", {"subject": "01"})
    state = breaker.record_failure(SIG, "qsiprep_preprocess", {"subject": "01"})
    assert (state.jobs, state.open) == (1, False)
    events = tmp_path / BREAKER_DIR / "events" / SIG.key
    assert [p.name for p in events.iterdir()] == ["qsiprep_preprocess--subject-01"]
    body = json.loads((events / "qsiprep_preprocess--subject-01").read_text())
    assert body["signature"] == SIG.describe()
    assert (body["rule"], body["wildcards"]) == ("qsiprep_preprocess", {"subject": "01"})
    assert isinstance(body["at"], float)


def test_the_breaker_is_announced_once_when_it_opens(tmp_path, logged):
    old_umask = os.umask(0o022)
    try:
        _announced_once(tmp_path, logged)
    finally:
        os.umask(old_umask)


def _announced_once(tmp_path, logged):
    breaker = CircuitBreaker(tmp_path, settings(threshold=2, window_minutes=10))
    first = breaker.record_failure(SIG, "qsirecon_reconstruct", {"subject": "01"})
    opened = breaker.record_failure(SIG, "qsirecon_reconstruct", {"subject": "02"})
    again = breaker.record_failure(SIG, "qsirecon_reconstruct", {"subject": "03"})
    assert [(s.open, s.announced) for s in (first, opened, again)] == [
        (False, False), (True, True), (True, False)]
    path = tmp_path / BREAKER_DIR / f"{SIG.key}.json"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the lab's other accounts
    announcement = json.loads(path.read_text())
    assert {k: v for k, v in announcement.items() if k != "opened_at"} == {
        "signature": SIG.describe(), "error_class": "TransientError", "pattern_id": "nfs_stale",
        "jobs": 2, "threshold": 2, "window_minutes": 10}
    assert logged == [{
        "event": "circuit breaker open: retries of jobs that failed like this will not start",
        "log_level": "warning", "signature": SIG.describe(), "jobs": 2, "window_minutes": 10,
        "announcement": str(tmp_path / BREAKER_DIR / f"{SIG.key}.json")}]


def test_an_open_breaker_keeps_its_announcement_fresh(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=1, window_minutes=10))
    breaker.record_failure(SIG, "r", {"subject": "01"})
    path = tmp_path / BREAKER_DIR / f"{SIG.key}.json"
    five_minutes_ago = path.stat().st_mtime - 300
    os.utime(path, (five_minutes_ago, five_minutes_ago))  # within the window: this opening
    state = breaker.record_failure(SIG, "r", {"subject": "02"})
    assert (state.open, state.announced) == (True, False)
    assert path.stat().st_mtime >= five_minutes_ago + 300  # touched
    assert list((tmp_path / BREAKER_DIR).glob("*.closed")) == []


def test_a_stale_announcement_is_retired_and_the_new_opening_announced(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=1, window_minutes=10))
    breaker.record_failure(SIG, "r", {"subject": "01"})
    path = tmp_path / BREAKER_DIR / f"{SIG.key}.json"
    stale = int(path.stat().st_mtime) - 601
    os.utime(path, (stale, stale))  # older than the window: an earlier opening
    state = breaker.record_failure(SIG, "r", {"subject": "02"})
    assert state.announced
    assert (tmp_path / BREAKER_DIR / f"{SIG.key}.{stale}.closed").exists()
    assert path.exists()


def test_announcements_lists_each_opened_breaker_with_a_stable_key(tmp_path):
    breaker = CircuitBreaker(tmp_path, settings(threshold=1))
    breaker.record_failure(SIG, "r", {"subject": "01"})
    # sorted before the real announcement: one bad file must not hide the others
    (tmp_path / BREAKER_DIR / "!broken.json").write_text("{not json")
    (tmp_path / BREAKER_DIR / "!list.json").write_text("[1, 2]")
    (tmp_path / BREAKER_DIR / "~no-time.json").write_text('{"signature": "s"}')
    found = announcements(tmp_path)
    assert [f["key"] for f in found][1:] == ["breaker:~no-time:0"]
    opened_at = int(json.loads((tmp_path / BREAKER_DIR / f"{SIG.key}.json").read_text())["opened_at"])
    assert found[0]["key"] == f"breaker:{SIG.key}:{opened_at}"
    assert found[0]["signature"] == SIG.describe()
    assert announcements(tmp_path / "nowhere") == []


@pytest.mark.parametrize("missing", ["events", "announcement"])
def test_files_removed_underneath_are_not_errors(tmp_path, missing):
    breaker = CircuitBreaker(tmp_path, settings(threshold=1))
    breaker.record_failure(SIG, "r", {"subject": "01"})
    if missing == "events":
        for path in (tmp_path / BREAKER_DIR / "events" / SIG.key).iterdir():
            path.unlink()
        (tmp_path / BREAKER_DIR / "events" / SIG.key).rmdir()
        assert breaker.recent_jobs(SIG) == 0
    else:
        (tmp_path / BREAKER_DIR / f"{SIG.key}.json").unlink()
        assert breaker._retire_if_stale(tmp_path / BREAKER_DIR / f"{SIG.key}.json") is True
