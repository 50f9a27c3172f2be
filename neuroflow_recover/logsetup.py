"""structlog configuration: diagnostics go to stderr, console renderer on a TTY, JSON otherwise."""

from __future__ import annotations

import logging
import sys

import structlog

from .secrets import redact_event


def configure(verbosity: int = 0) -> None:
    level = logging.WARNING - 10 * verbosity  # -v info, -vv debug
    level = max(logging.DEBUG, min(logging.WARNING, level))
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            redact_event,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str):
    return structlog.get_logger(name)
