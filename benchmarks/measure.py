"""Shared by the benchmarks: a scratch study directory, and a child measured on its own."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

# A child's peak memory counts the pages of the process it was forked from (Linux keeps the
# high-water mark across exec): a child is started by this small Python, which reports the
# child's own usage, not by the (possibly large) benchmark process.
_PARENT = """import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
json.dump({"code": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
           "mb": usage.ru_maxrss / 1024}, open(sys.argv[1], "w"))
"""


@dataclass(frozen=True)
class Usage:
    wall: float  # seconds
    cpu: float  # seconds, user + system, of the child alone
    mb: float  # the child's peak resident memory
    code: int  # its exit code (-1: it could not be measured)


def measured(
    command: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    stdout: IO | int | None = None,
    stderr: IO | int | None = None,
) -> Usage:
    """Run `command` and measure it alone: wall time, CPU time, peak memory, exit code."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _PARENT, report.name, *command], cwd=cwd, env=env,
                       stdout=stdout, stderr=stderr)  # fmt: skip
        wall = time.perf_counter() - start
        figures = json.loads(report.read() or "{}")
    return Usage(wall, figures.get("cpu", 0.0), figures.get("mb", 0.0), figures.get("code", -1))


@contextlib.contextmanager
def scratch(prefix: str, keep: bool) -> Iterator[Path]:
    """A new directory for a generated study, removed afterwards unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
