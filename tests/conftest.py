"""Shared pytest fixtures (small and generic; append new ones at the end)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def tool_env() -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin directory first on PATH
    (neuroflow-recover, snakemake, heudiconv, dcm2niix, qsiparc), no NEUROFLOW_DB."""
    env = dict(os.environ)
    env.pop("NEUROFLOW_DB", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
