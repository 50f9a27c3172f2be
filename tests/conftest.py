"""Shared pytest fixtures (small and generic; helpers live in helpers.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from backends import BACKENDS, Backend, create_pg_database, drop_pg_database, require_pg
from helpers import REPO
from helpers import tool_env as _tool_env


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def tool_env() -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin directory first on PATH
    (neuroflow-recover, snakemake, heudiconv, dcm2niix, qsiparc), no NEUROFLOW_DB."""
    return _tool_env()


@pytest.fixture
def logged():
    """structlog events at every level, as dicts (the CLI's configuration filters below
    WARNING; restored afterwards)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as events:
            yield events
    finally:
        structlog.configure(**saved)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each test that takes it runs on SQLite and on PostgreSQL (tests/backends.py)."""
    if request.param == "sqlite":
        yield Backend("sqlite")
        return
    admin = require_pg()
    url = create_pg_database(admin)
    try:
        yield Backend("postgresql", url)
    finally:
        drop_pg_database(admin, url)
