"""Helpers shared by the test modules: the repository, the venv's tools, an example copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # neuroflow-recover, snakemake, heudiconv, qsiparc
SNAKEFILE = REPO / "workflow" / "Snakefile"


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: the venv's bin first on PATH, no NEUROFLOW_DB."""
    env = dict(os.environ)
    env.pop("NEUROFLOW_DB", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def copy_example(root: Path, subjects: int, sessions: int) -> Path:
    """The workflow, profiles, config and example (stand-ins, config) copied to `root`, with
    generated DICOMs of `subjects` x `sessions` under example/data."""
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake", "results", "work", "data")
    for name in ("workflow", "profiles", "config"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    (root / "example").mkdir()
    shutil.copytree(REPO / "example" / "standins", root / "example" / "standins", ignore=ignore)
    for name in ("make_example_data.py", "config.yaml"):
        shutil.copy2(REPO / "example" / name, root / "example" / name)
    subprocess.run(
        [sys.executable, "example/make_example_data.py", "--out", "example/data",
         "--subjects", str(subjects), "--sessions", str(sessions)],
        cwd=root, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return root
