"""The working directory's Snakemake lock: refuse to run while a Snakemake holds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import NeuroflowError, WorkflowLocked
from ..logs.locations import lock_files, running_snakemake
from ..logsetup import get_logger
from ..workflow.invocation import Invocation, build_command, show_command

log = get_logger(__name__)


def check_lock(workdir: Path, invocation: Invocation, *, unlock: bool = False) -> None:
    """Refuse to start while a running Snakemake holds the lock; handle stale locks.

    Raises WorkflowLocked (nothing changed). With `unlock`, a stale lock (no Snakemake
    process alive for the directory, e.g. after kill -9) is removed with `snakemake --unlock`.
    """
    locks = lock_files(workdir)
    if not locks:
        return
    pids = running_snakemake(workdir)
    if pids:
        raise WorkflowLocked(
            f"Snakemake is running in {workdir} (pid {', '.join(map(str, pids))}) and holds "
            "its lock: wait for it to finish, nothing was changed"
        )
    if not unlock:
        raise WorkflowLocked(
            f"{workdir} has a stale Snakemake lock ({len(locks)} file(s) in .snakemake/locks, "
            "no Snakemake process is running there, e.g. after a kill -9): run "
            f"`snakemake --unlock` in {workdir}, or pass --unlock; nothing was changed"
        )
    command = build_command(invocation) + ["--unlock"]
    log.warning("removing a stale Snakemake lock", command=show_command(command))
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, errors="replace", check=False
    )
    if result.returncode != 0 or lock_files(workdir):
        raise NeuroflowError(
            f"`{show_command(command)}` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
