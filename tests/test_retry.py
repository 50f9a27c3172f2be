"""The seed's retry policy: error classes, delays with seedable jitter, config loading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from neuroflow_recover.classify.classes import (
    ERROR_CLASSES,
    ERROR_TYPES,
    NON_RETRYABLE,
    ConfigurationError,
    NonRetryableError,
    ResourceError,
    RetryableError,
    TransientError,
    ValidationError,
    error_type,
    to_exception,
)
from neuroflow_recover.classify.classifier import Classification
from neuroflow_recover.classify.policy import (
    DEFAULT_POLICIES,
    RetryContext,
    RetryPolicy,
    get_retry_policy,
    policies_from_config,
)
from neuroflow_recover.errors import ConfigError, NeuroflowError, UnknownErrorClass

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "config.yaml"


class Fixed:
    """An rng whose `uniform` always returns one end of the range."""

    def __init__(self, end: str):
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self.end == "low" else b


# ----------------------------------------------------------------------------- classes


def test_seed_hierarchy():
    assert issubclass(TransientError, RetryableError) and issubclass(ResourceError, RetryableError)
    assert issubclass(ValidationError, NonRetryableError) and issubclass(ConfigurationError, NonRetryableError)
    assert not issubclass(NonRetryableError, RetryableError)
    assert set(ERROR_TYPES) == set(ERROR_CLASSES)
    for name in ERROR_CLASSES:  # the classifier's notion of retryable is the hierarchy's
        assert issubclass(error_type(name), NonRetryableError) == (name in NON_RETRYABLE)


def test_to_exception_and_unknown_names():
    exc = to_exception("ResourceError", "Killed")
    assert isinstance(exc, ResourceError) and str(exc) == "Killed"
    with pytest.raises(UnknownErrorClass) as info:
        error_type("FatalError")
    assert isinstance(info.value, NeuroflowError)
    assert "FatalError" in str(info.value)


# ----------------------------------------------------------------------------- delays


def test_exponential_delays_without_jitter():
    policy = RetryPolicy(initial_delay_seconds=300, max_delay_seconds=3600, jitter=False)
    assert [policy.get_delay(a) for a in (1, 2, 3, 4, 5, 6)] == [300, 600, 1200, 2400, 3600, 3600]


def test_attempt_zero_and_negative_mean_the_first_attempt():
    """The seed gave half the initial delay for attempt 0 (2 ** -1)."""
    policy = RetryPolicy(initial_delay_seconds=300, jitter=False)
    assert policy.get_delay(0) == policy.get_delay(-3) == policy.get_delay(1) == 300


def test_constant_delay_without_backoff():
    policy = RetryPolicy(initial_delay_seconds=120, max_delay_seconds=3600, exponential_backoff=False, jitter=False)
    assert {policy.get_delay(a) for a in range(1, 10)} == {120}


def test_huge_attempt_numbers_stay_at_the_cap():
    policy = RetryPolicy(initial_delay_seconds=1, max_delay_seconds=7200, jitter=False)
    assert policy.get_delay(10_000) == 7200


def test_jitter_is_within_20_percent_and_seedable():
    policy = RetryPolicy(initial_delay_seconds=1000, max_delay_seconds=100_000)
    first = [policy.get_delay(2, rng=random.Random(42)) for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same delay
    delays = [policy.get_delay(2, rng=random.Random(seed)) for seed in range(200)]
    assert all(1600 <= d <= 2400 for d in delays)
    assert len(set(delays)) > 50  # it does vary
    assert policy.get_delay(2, rng=Fixed("low")) == 1600
    assert policy.get_delay(2, rng=Fixed("high")) == 2400


def test_jitter_never_exceeds_the_cap():
    """The seed applied jitter after the cap, so the delay could reach 1.2 x max."""
    policy = RetryPolicy(initial_delay_seconds=1800, max_delay_seconds=3600)
    assert policy.get_delay(5, rng=Fixed("high")) == 3600
    assert policy.get_delay(5, rng=Fixed("low")) == 2880


def test_zero_delay_policy():
    policy = RetryPolicy(initial_delay_seconds=0, max_delay_seconds=0)
    assert policy.get_delay(3, rng=random.Random(1)) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_delay_seconds": -1}, "initial_delay_seconds"),
        ({"initial_delay_seconds": 600, "max_delay_seconds": 60}, "below"),
        ({"retry_on": ("NoSuchError",)}, "NoSuchError"),
    ],
)
def test_invalid_policies(kwargs, message):
    with pytest.raises(NeuroflowError) as info:
        RetryPolicy(**kwargs)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- should_retry


@pytest.mark.parametrize(
    "error",
    ["TransientError", TransientError("x"), TransientError, ResourceError("oom"), "RetryableError",
     Classification("ResourceError", True, "memory")],
)
def test_retryable_errors_retry_until_the_last_attempt(error):
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(error, a) for a in (1, 2, 3, 4)] == [True, True, False, False]


@pytest.mark.parametrize(
    "error",
    ["ValidationError", ConfigurationError("license"), NonRetryableError, ValueError("boom"),
     Classification("ConfigurationError", False)],
)
def test_non_retryable_and_foreign_errors_never_retry(error):
    assert not RetryPolicy(max_attempts=5).should_retry(error, 1)


def test_retry_on_narrows_what_is_retried():
    policy = RetryPolicy(retry_on=(TransientError,))
    assert policy.should_retry("TransientError", 1)
    assert not policy.should_retry("ResourceError", 1)
    assert RetryPolicy(retry_on=("ResourceError",)).retry_on == (ResourceError,)


def test_single_attempt_policy_never_retries():
    assert not RetryPolicy(max_attempts=1).should_retry("TransientError", 1)


def test_should_retry_rejects_unknown_names():
    with pytest.raises(UnknownErrorClass):
        RetryPolicy().should_retry("Whatever", 1)
    with pytest.raises(UnknownErrorClass):
        RetryPolicy().should_retry(42, 1)


# ----------------------------------------------------------------------------- policies


def test_default_policies_are_the_seeds():
    expected = {
        "bids_conversion": (2, 300, 1800),
        "qsiprep": (3, 1800, 7200),
        "qsirecon": (3, 1800, 3600),
        "qsiparc": (3, 300, 1800),
    }
    got = {k: (p.max_attempts, p.initial_delay_seconds, p.max_delay_seconds) for k, p in DEFAULT_POLICIES.items()}
    assert got == expected
    assert get_retry_policy("qsiprep") is DEFAULT_POLICIES["qsiprep"]
    assert get_retry_policy("unknown_pipeline") == RetryPolicy()


def test_policies_from_the_shipped_config():
    cfg = yaml.safe_load(REPO_CONFIG.read_text())
    policies = policies_from_config(cfg)
    assert set(policies) == {"default", *DEFAULT_POLICIES}
    assert policies["default"] == RetryPolicy(max_attempts=3, initial_delay_seconds=300, max_delay_seconds=3600)
    assert (policies["qsiprep"].initial_delay_seconds, policies["qsiprep"].max_delay_seconds) == (1800, 7200)
    assert (policies["bids_conversion"].max_attempts, policies["bids_conversion"].max_delay_seconds) == (2, 1800)
    assert get_retry_policy("qsirecon", policies).max_delay_seconds == 3600
    assert get_retry_policy("not_a_pipeline", policies) is policies["default"]


def test_config_overrides_seed_and_default_keys_are_inherited():
    cfg = {
        "error_handling": {
            "default_retry": {"max_attempts": 4, "initial_delay_minutes": 1, "max_delay_minutes": 10,
                              "exponential_backoff": False, "jitter": False},
            "pipelines": {"qsiprep": {"max_attempts": 5, "initial_delay_minutes": 0.5}},
        }
    }
    policies = policies_from_config(cfg)
    qsiprep = policies["qsiprep"]
    assert (qsiprep.max_attempts, qsiprep.initial_delay_seconds, qsiprep.max_delay_seconds) == (5, 30, 7200)
    assert (qsiprep.exponential_backoff, qsiprep.jitter) == (False, False)  # from default_retry
    qsiparc = policies["qsiparc"]  # not in the config: the seed's numbers
    assert (qsiparc.max_attempts, qsiparc.initial_delay_seconds, qsiparc.max_delay_seconds) == (3, 300, 1800)
    assert qsiparc.jitter is False
    assert policies["default"].max_attempts == 4


def test_the_section_itself_and_empty_configs():
    section = {"default_retry": {"max_attempts": 2}}
    assert policies_from_config(section)["default"].max_attempts == 2
    for cfg in (None, {}, {"error_handling": None}, {"error_handling": {}}):
        policies = policies_from_config(cfg)
        assert policies["default"] == RetryPolicy()
        assert policies["qsiprep"].initial_delay_seconds == 1800


@pytest.mark.parametrize(
    "section, message",
    [
        ({"default_retry": {"max_attempts": 0}}, "error_handling.default_retry.max_attempts"),
        ({"default_retry": {"initial_delay_minutes": "soon"}}, "error_handling.default_retry.initial_delay_minutes"),
        ({"default_retry": {"jitter": "yes"}}, "error_handling.default_retry.jitter"),
        ({"default_retry": {"max_attempt": 3}}, "unknown key(s) max_attempt"),
        ({"pipelines": {"qsiprep": {"initial_delay_minutes": 500}}}, "error_handling.pipelines.qsiprep"),
        ({"pipelines": ["qsiprep"]}, "error_handling.pipelines"),
        ({"default_retry": 3}, "error_handling.default_retry: must be a mapping"),
    ],
)
def test_bad_config_names_the_key(section, message):
    with pytest.raises(ConfigError) as info:
        policies_from_config({"error_handling": section})
    assert message in str(info.value)


# ----------------------------------------------------------------------------- RetryContext


def test_retry_context_runs_exactly_max_attempts():
    """The seed's context started at attempt 0 and allowed max_attempts + 1 runs."""
    ctx = RetryContext(run_id=7, policy=RetryPolicy(max_attempts=3, jitter=False))
    runs = 0
    while True:
        runs += 1
        ctx.record_error(TransientError("Connection reset by peer"))
        if not ctx.should_retry(TransientError("again")):
            break
        assert ctx.get_next_delay() == 300 * 2 ** (ctx.attempt - 1)
        ctx.increment_attempt()
    assert runs == 3 and ctx.is_exhausted
    assert [e["attempt"] for e in ctx.errors] == [1, 2, 3]
    assert ctx.errors[0]["error_type"] == "TransientError"
    assert ctx.errors[0]["error_message"] == "Connection reset by peer"


def test_retry_context_accepts_classifications_and_stops_on_non_retryable():
    ctx = RetryContext(run_id="qsiprep_preprocess/subject-01", policy=DEFAULT_POLICIES["qsiprep"])
    cause = Classification("ConfigurationError", False, None, "freesurfer_license", "license.txt not found")
    ctx.record_error(cause)
    assert ctx.errors[0]["error_type"] == "ConfigurationError"
    assert ctx.errors[0]["error_message"] == "license.txt not found"
    assert not ctx.should_retry(cause)
    assert not ctx.is_exhausted
    assert ctx.get_next_delay(rng=Fixed("low")) == 1440


# ------------------------------------------------- configuration messages (docs/testing.md)
KNOWN = "max_attempts, initial_delay_minutes, max_delay_minutes, exponential_backoff, jitter"


@pytest.mark.parametrize(
    "cfg, message",
    [
        ("text", "config: must be a mapping"),
        ({"error_handling": 5}, "error_handling: must be a mapping"),
        ({"pipelines": [1]}, "error_handling.pipelines: must be a mapping of pipeline -> policy"),
        ({"default_retry": {"foo": 1, "bar": 2}},
         f"error_handling.default_retry: unknown key(s) bar, foo (known: {KNOWN})"),
        ({"pipelines": {"qsiprep": {"bogus": 1}}},
         f"error_handling.pipelines.qsiprep: unknown key(s) bogus (known: {KNOWN})"),
        ({"default_retry": {"max_attempts": True}},
         "error_handling.default_retry.max_attempts: must be an integer >= 1, got True"),
        ({"default_retry": {"max_attempts": 0}},
         "error_handling.default_retry.max_attempts: must be an integer >= 1, got 0"),
        ({"default_retry": {"initial_delay_minutes": -1}},
         "error_handling.default_retry.initial_delay_minutes: must be a number of minutes >= 0, got -1"),
        ({"default_retry": {"jitter": "yes"}},
         "error_handling.default_retry.jitter: must be true or false, got 'yes'"),
        ({"default_retry": {"initial_delay_minutes": 120, "max_delay_minutes": 60}},
         "error_handling.default_retry: max_delay_seconds (3600) is below initial_delay_seconds (7200)"),
    ],
)
def test_bad_retry_configuration_is_named_exactly(cfg, message):
    with pytest.raises(ConfigError) as caught:
        policies_from_config(cfg)
    assert str(caught.value) == message


def test_retry_configuration_boundaries_and_pipelines():
    policies = policies_from_config({
        "default_retry": {"max_attempts": 1, "initial_delay_minutes": 0},
        "pipelines": {"qsiprep": {"max_attempts": 5}, "custom": {"max_attempts": 4}},
    })  # the section itself, without the error_handling key
    assert (policies["default"].max_attempts, policies["default"].initial_delay_seconds) == (1, 0)
    assert policies["qsiprep"].max_attempts == 5 and policies["custom"].max_attempts == 4
    assert get_retry_policy("qsiprep", policies) is policies["qsiprep"]
    assert get_retry_policy("unlisted", policies) is policies["default"]
    with pytest.raises(ConfigError, match=r"^initial_delay_seconds must be a number >= 0, got True$"):
        RetryPolicy(initial_delay_seconds=True)


def test_jitter_applies_to_delays_below_one_second():
    policy = RetryPolicy(initial_delay_seconds=0.9, max_delay_seconds=10, exponential_backoff=False)
    assert policy.get_delay(1, rng=Fixed("high")) == 1  # 0.9 + 20 %
    assert policy.get_delay(1, rng=Fixed("low")) == 0


def test_retry_context_records_a_class_name_without_evidence():
    ctx = RetryContext(run_id="r1", policy=RetryPolicy())
    ctx.record_error("TransientError")
    (error,) = ctx.errors
    assert set(error) == {"attempt", "error_type", "error_message", "timestamp"}
    assert (error["attempt"], error["error_type"], error["error_message"]) == (1, "TransientError", "")
    assert error["timestamp"].endswith("+00:00")  # UTC, with its offset
