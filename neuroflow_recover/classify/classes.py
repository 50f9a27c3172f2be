"""The seed's error classes: their names, which are retryable, and the exception hierarchy.

::

    RetryableError ─┬─ TransientError      (likely to succeed on retry, same resources)
                    └─ ResourceError       (memory / runtime / disk exhausted)
    NonRetryableError ─┬─ ValidationError  (bad input data)
                       └─ ConfigurationError (setup, licence, image, arguments)

The classifier answers with a class NAME (``ERROR_CLASSES``); the exceptions are for code
written against the seed (``to_exception``, ``RetryPolicy.retry_on``).
"""

from __future__ import annotations

from typing import Any

from ..errors import UnknownErrorClass

ERROR_CLASSES = (
    "TransientError",
    "ResourceError",
    "ValidationError",
    "ConfigurationError",
    "NonRetryableError",
    "RetryableError",
)
NON_RETRYABLE = frozenset({"ValidationError", "ConfigurationError", "NonRetryableError"})
RESOURCES = ("memory", "runtime", "disk")  # what a ResourceError ran out of
DEFAULT_CLASS = "RetryableError"  # nothing known about the failure


class RetryableError(Exception):
    """Base class for errors that should trigger retry."""


class TransientError(RetryableError):
    """Temporary errors that are likely to succeed on retry."""


class ResourceError(RetryableError):
    """Resource exhaustion errors (memory, runtime, disk, process limits)."""


class NonRetryableError(Exception):
    """Errors that should NOT trigger retry."""


class ValidationError(NonRetryableError):
    """Input validation failures."""


class ConfigurationError(NonRetryableError):
    """Configuration or setup errors."""


ERROR_TYPES: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        RetryableError,
        TransientError,
        ResourceError,
        NonRetryableError,
        ValidationError,
        ConfigurationError,
    )
}


def error_type(name: str) -> type[Exception]:
    """The exception class of a class name ('ResourceError' -> ResourceError)."""
    try:
        return ERROR_TYPES[name]
    except KeyError:
        raise UnknownErrorClass(
            f"unknown error class {name!r} (known: {', '.join(ERROR_TYPES)})"
        ) from None


def to_exception(error_class: str, message: str = "") -> Exception:
    """An instance of the named class (the seed's wrap_error, for a classification)."""
    return error_type(error_class)(message)


def as_error_type(error: Any) -> type[Exception]:
    """Exception type of a class name, an exception, an exception class or a Classification."""
    if isinstance(error, str):
        return error_type(error)
    if isinstance(error, type) and issubclass(error, BaseException):
        return error
    if isinstance(error, BaseException):
        return type(error)
    name = getattr(error, "error_class", None)  # a classifier.Classification
    if isinstance(name, str):
        return error_type(name)
    raise UnknownErrorClass(f"not an error class, exception or classification: {error!r}")
