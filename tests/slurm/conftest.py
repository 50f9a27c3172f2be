"""The SLURM suite's fixture: the local cluster (tests/slurm/run.sh starts it).

Without a cluster the SLURM tests are skipped, except under CI=true, where that fails.
"""

from __future__ import annotations

import os

import pytest

import probe


@pytest.fixture(scope="session")
def cluster() -> None:
    """A reachable SLURM cluster with the test partition; skips (fails under CI) otherwise."""
    problem = probe.cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"no SLURM cluster under CI: {problem}")
    pytest.skip(f"no SLURM cluster: {problem}")
