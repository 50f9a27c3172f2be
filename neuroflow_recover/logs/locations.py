"""Where Snakemake keeps its files in a working directory, and whether a run is using it."""

from __future__ import annotations

import os
from pathlib import Path

LOG_DIR = Path(".snakemake") / "log"
LOG_SUFFIX = ".snakemake.log"
LOCK_DIR = Path(".snakemake") / "locks"
# snakemake-executor-plugin-slurm 2.8: <logdir>/rule_<rule>/<wildcard values>/<job id>.log
SLURM_LOGDIR = Path(".snakemake") / "slurm_logs"


def run_id_of(path: str | os.PathLike) -> str:
    """A main log's run ID: its file name without ``.snakemake.log``."""
    path = Path(path)
    return path.name[: -len(LOG_SUFFIX)] if path.name.endswith(LOG_SUFFIX) else path.stem


def main_logs(workdir: str | os.PathLike) -> list[Path]:
    """Every main log of a working directory, oldest first (their names are start times)."""
    directory = Path(workdir) / LOG_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{LOG_SUFFIX}"))


def lock_files(workdir: str | os.PathLike) -> list[Path]:
    """The files in `.snakemake/locks` ([] when there is no such directory).

    Every Snakemake process creates that directory when it starts and removes it when it
    ends, so it may vanish between looking and listing: that is "no lock", not an error.
    """
    directory = Path(workdir) / LOCK_DIR
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def running_snakemake(workdir: Path) -> list[int]:
    """PIDs of Snakemake processes of this host working in `workdir` (cwd or --directory),
    reached through any path (compared by device and inode: bind mounts, symlinks)."""
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
            directory = (cwd / where) if where else cwd
            if _same_directory(directory, target):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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


def run_in_progress(workdir: str | os.PathLike) -> bool:
    """A Snakemake run is working in `workdir`: it holds the lock and its process lives.

    Locks without a live Snakemake process (one killed with SIGKILL) are stale. A run on
    another machine (a second login node) cannot be seen: its log is then read as it is.
    """
    return bool(lock_files(workdir)) and bool(running_snakemake(Path(workdir)))


def display_path(path: str | os.PathLike, workdir: str | os.PathLike) -> str:
    """A path as shown to users: relative to the working directory when inside it."""
    try:
        return str(Path(path).absolute().relative_to(Path(workdir).absolute()))
    except ValueError:
        return str(path)
