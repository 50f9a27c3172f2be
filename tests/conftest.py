"""Shared pytest fixtures (small and generic; helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
