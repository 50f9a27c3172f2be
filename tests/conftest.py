"""Shared pytest fixtures (small and generic; helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
