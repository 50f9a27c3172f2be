"""Where Snakemake keeps its files in a working directory: main logs, locks, SLURM logs."""

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


def display_path(path: str | os.PathLike, workdir: str | os.PathLike) -> str:
    """A path as shown to users: relative to the working directory when inside it."""
    try:
        return str(Path(path).absolute().relative_to(Path(workdir).absolute()))
    except ValueError:
        return str(path)
