"""The seed's retry policy (docs/error-handling-seed.md), fixed and made configurable.

Attempts are numbered from 1 (as Snakemake's ``attempt``). ``RetryPolicy.get_delay(n)`` is
the wait after attempt ``n`` failed, before attempt ``n + 1``:
``initial * 2**(n-1)`` capped at ``max_delay`` (``initial`` without exponential backoff),
then ±20 % jitter, the result clamped to ``[0, max_delay]``. ``should_retry(err, n)`` is True
when attempt ``n`` failed with a retryable class and ``n < max_attempts``.

Fixes against the seed:

* ``get_delay(0)`` gave half the initial delay (``2 ** -1``); attempts below 1 are now
  treated as attempt 1;
* jitter could push the delay above ``max_delay_seconds``; the cap now holds after jitter;
* ``RetryContext`` started at attempt 0 and compared ``attempt >= max_attempts`` before
  incrementing, which allowed ``max_attempts + 1`` runs; it now starts at 1 and
  ``should_retry`` is False once ``max_attempts`` attempts have run;
* jitter used the global ``random`` module: pass ``rng`` (anything with ``uniform``) for
  reproducible delays;
* a huge attempt number no longer builds a huge integer (the exponent is capped).

Configuration (``error_handling`` in config/config.yaml)::

    default_retry: {max_attempts, initial_delay_minutes, max_delay_minutes,
                    exponential_backoff, jitter}
    pipelines: {<pipeline>: {same keys, each optional}}

``policies_from_config`` gives one policy per pipeline: the config's ``default_retry``
(over ``RetryPolicy()`` defaults), then the seed's ``DEFAULT_POLICIES`` numbers for that
pipeline, then the config's ``pipelines.<name>`` keys. Minutes become seconds. The
``"default"`` key holds the policy for pipelines not listed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from ..errors import ConfigError
from .classes import NonRetryableError, RetryableError, as_error_type


class SupportsUniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


JITTER_FRACTION = 0.2  # ±20 %
MAX_EXPONENT = 62  # 2**62 seconds is far beyond any cap


@dataclass(frozen=True)
class RetryPolicy:
    """Configuration for retry behaviour (the seed's fields; delays in seconds)."""

    max_attempts: int = 3
    initial_delay_seconds: int = 300  # 5 minutes
    max_delay_seconds: int = 3600  # 1 hour
    exponential_backoff: bool = True
    jitter: bool = True
    retry_on: tuple[type[Exception], ...] = (RetryableError,)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("initial_delay_seconds", "max_delay_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.max_delay_seconds < self.initial_delay_seconds:
            raise ConfigError(
                f"max_delay_seconds ({self.max_delay_seconds}) is below "
                f"initial_delay_seconds ({self.initial_delay_seconds})"
            )
        retry_on = tuple(as_error_type(e) for e in self.retry_on)
        object.__setattr__(self, "retry_on", retry_on)

    def base_delay(self, attempt: int) -> float:
        """The delay after attempt `attempt` (1-based) failed, before jitter."""
        attempt = max(1, int(attempt))
        if not self.exponential_backoff:
            delay = float(self.initial_delay_seconds)
        else:
            delay = float(self.initial_delay_seconds) * 2.0 ** min(attempt - 1, MAX_EXPONENT)
        return min(delay, float(self.max_delay_seconds))

    def get_delay(self, attempt: int, rng: SupportsUniform | None = None) -> int:
        """Seconds to wait after attempt `attempt` failed (jitter ±20 %, capped at max)."""
        delay = self.base_delay(attempt)
        if self.jitter and delay > 0:
            spread = delay * JITTER_FRACTION
            delay += (rng or random).uniform(-spread, spread)
        return int(max(0.0, min(delay, float(self.max_delay_seconds))))

    def should_retry(self, error: Any, attempt: int) -> bool:
        """True when attempt `attempt` (1-based) failed with `error` and another may run.

        `error` is a class name ('TransientError'), an exception, an exception class or a
        classifier.Classification.
        """
        if attempt >= self.max_attempts:
            return False
        err_type = as_error_type(error)
        if issubclass(err_type, NonRetryableError):
            return False
        return issubclass(err_type, self.retry_on)


DEFAULT_POLICIES: dict[str, RetryPolicy] = {
    "bids_conversion": RetryPolicy(max_attempts=2, initial_delay_seconds=300, max_delay_seconds=1800),
    "qsiprep": RetryPolicy(max_attempts=3, initial_delay_seconds=1800, max_delay_seconds=7200),
    "qsirecon": RetryPolicy(max_attempts=3, initial_delay_seconds=1800, max_delay_seconds=3600),
    "qsiparc": RetryPolicy(max_attempts=3, initial_delay_seconds=300, max_delay_seconds=1800),
}
DEFAULT_KEY = "default"

_CONFIG_KEYS = {
    "max_attempts": "max_attempts",
    "initial_delay_minutes": "initial_delay_seconds",
    "max_delay_minutes": "max_delay_seconds",
    "exponential_backoff": "exponential_backoff",
    "jitter": "jitter",
}
_SEED_FIELDS = ("max_attempts", "initial_delay_seconds", "max_delay_seconds")


def _overrides(section: Any, where: str) -> dict[str, Any]:
    """RetryPolicy keyword arguments from one config mapping (minutes -> seconds)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(section) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_CONFIG_KEYS)})")
    out: dict[str, Any] = {}
    for key, value in section.items():
        target = _CONFIG_KEYS[key]
        if key.endswith("_minutes"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}.{key}: must be a number of minutes >= 0, got {value!r}")
            out[target] = int(round(value * 60))
        elif key == "max_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key}: must be an integer >= 1, got {value!r}")
            out[target] = value
        else:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}")
            out[target] = value
    return out


def _policy(base: RetryPolicy, changes: dict[str, Any], where: str) -> RetryPolicy:
    try:
        return replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def policies_from_config(cfg: Mapping | None) -> dict[str, RetryPolicy]:
    """Retry policies per pipeline from a config's `error_handling` section.

    `cfg` is the whole workflow config (with an `error_handling` key) or the section itself.
    """
    cfg = cfg or {}
    if not isinstance(cfg, Mapping):
        raise ConfigError("config: must be a mapping")
    section = cfg.get("error_handling", cfg if ("default_retry" in cfg or "pipelines" in cfg) else {})
    section = section or {}
    if not isinstance(section, Mapping):
        raise ConfigError("error_handling: must be a mapping")

    default = _policy(
        RetryPolicy(), _overrides(section.get("default_retry"), "error_handling.default_retry"),
        "error_handling.default_retry",
    )
    pipelines = section.get("pipelines") or {}
    if not isinstance(pipelines, Mapping):
        raise ConfigError("error_handling.pipelines: must be a mapping of pipeline -> policy")

    policies: dict[str, RetryPolicy] = {DEFAULT_KEY: default}
    for name in (*DEFAULT_POLICIES, *(p for p in pipelines if p not in DEFAULT_POLICIES)):
        where = f"error_handling.pipelines.{name}"
        changes: dict[str, Any] = {}
        if name in DEFAULT_POLICIES:
            seed = DEFAULT_POLICIES[name]
            changes.update({f: getattr(seed, f) for f in _SEED_FIELDS})
        changes.update(_overrides(pipelines.get(name), where))
        policies[str(name)] = _policy(default, changes, where)
    return policies


def get_retry_policy(name: str, policies: Mapping[str, RetryPolicy] | None = None) -> RetryPolicy:
    """The policy of a pipeline (seed name, e.g. 'qsiprep'); the default policy otherwise."""
    if policies is None:
        return DEFAULT_POLICIES.get(name, RetryPolicy())
    return policies.get(name) or policies.get(DEFAULT_KEY) or RetryPolicy()


@dataclass
class RetryContext:
    """Tracks the attempts of one job (the seed's RetryContext, attempts numbered from 1)."""

    run_id: Any
    policy: RetryPolicy
    attempt: int = 1  # the attempt currently running (or that just failed)
    errors: list[dict] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def record_error(self, error: Any, message: str | None = None) -> None:
        """Record the failure of the current attempt (exception, class name or Classification)."""
        err_type = as_error_type(error)
        if message is None:
            message = str(error) if isinstance(error, BaseException) else (getattr(error, "evidence", None) or "")
        self.errors.append(
            {
                "attempt": self.attempt,
                "error_type": err_type.__name__,
                "error_message": message,
                "timestamp": datetime.now(timezone.utc).isoformat(),
            }
        )

    def should_retry(self, error: Any) -> bool:
        return self.policy.should_retry(error, self.attempt)

    def get_next_delay(self, rng: SupportsUniform | None = None) -> int:
        """Seconds to wait before the next attempt (after the current one failed)."""
        return self.policy.get_delay(self.attempt, rng=rng)

    def increment_attempt(self) -> None:
        self.attempt += 1

    @property
    def is_exhausted(self) -> bool:
        """True once the current attempt is the last one the policy allows."""
        return self.attempt >= self.policy.max_attempts
