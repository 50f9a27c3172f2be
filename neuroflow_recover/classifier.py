"""Error classifier: text (+ exit code, SLURM state) -> error class, resource and evidence.

Contract (implementation pending): see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR_CLASSES = (
    "TransientError",
    "ResourceError",
    "ValidationError",
    "ConfigurationError",
    "NonRetryableError",
    "RetryableError",
)
NON_RETRYABLE = frozenset({"ValidationError", "ConfigurationError", "NonRetryableError"})
RESOURCES = ("memory", "runtime", "disk")


@dataclass(frozen=True)
class Classification:
    error_class: str  # one of ERROR_CLASSES
    retryable: bool
    resource: str | None = None  # memory | runtime | disk, for ResourceError
    pattern_id: str | None = None  # pattern id, "exit:<code>", "slurm:<STATE>", None = default
    evidence: str | None = None  # the line that matched

    def to_dict(self) -> dict:
        return asdict(self)
