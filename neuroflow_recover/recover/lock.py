"""The working directory's Snakemake lock: refuse to run while a Snakemake holds it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import NeuroflowError, WorkflowLocked
from ..logs.locations import lock_files
from ..logsetup import get_logger
from .invocation import Invocation, build_command, show_command

log = get_logger(__name__)


def running_snakemake(workdir: Path) -> list[int]:
    """PIDs of Snakemake processes working in `workdir` (cwd or --directory)."""
    import psutil

    target = Path(workdir).resolve()
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.pid in mine:
                continue
            cmdline = process.info.get("cmdline") or []
            if not _is_snakemake(cmdline):
                continue
            where = _directory_arg(cmdline)
            cwd = Path(process.cwd())
            directory = (cwd / where).resolve() if where else cwd.resolve()
            if directory == target:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _is_snakemake(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    if Path(cmdline[0]).name == "snakemake":
        return True
    if Path(cmdline[0]).name.startswith("python"):
        rest = cmdline[1:]
        if rest[:2] == ["-m", "snakemake"]:
            return True
        if rest and Path(rest[0]).name == "snakemake":
            return True
    return False


def _directory_arg(cmdline: list[str]) -> str | None:
    for index, arg in enumerate(cmdline):
        if arg in ("-d", "--directory") and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if arg.startswith("--directory="):
            return arg.split("=", 1)[1]
    return None


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
