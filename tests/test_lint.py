"""`snakemake --lint` reports nothing and the workflow is snakefmt-formatted."""

from __future__ import annotations

import subprocess
import sys

from workflow_study import REPO, SNAKEFILE, env, make_study, snakemake


def test_snakemake_lint_is_clean_on_a_study(tmp_path):
    study = make_study(tmp_path / "study", 2, 2)
    result = snakemake(study, "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output
    assert "Congratulations, your workflow is in a good condition!" in output


def test_snakemake_lint_is_clean_from_the_repository_root():
    """As `make lint` runs it: config/config.yaml, the empty sessions template."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(SNAKEFILE)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env(),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output


def test_snakefmt_check_passes():
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", str(REPO / "workflow")],
        capture_output=True, text=True, timeout=600, env=env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing():
    """Unused or undefined names, syntax errors, unsorted imports (pyproject.toml [tool.ruff])."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "neuroflow_recover", "tests", "benchmarks",
         "example"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
