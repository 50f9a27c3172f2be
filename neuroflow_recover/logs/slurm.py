"""The SLURM plugin's job logs: where a job's logs are and which are new since a moment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..workflow.layout import wildcards_dict
from .locations import SLURM_LOGDIR

_LOG_NAME = re.compile(r"\d+(_\d+)?\.log")


def slurm_log_dir(
    workdir: str | os.PathLike,
    rule: str,
    wildcards: Any,
    logdir: str | os.PathLike | None = None,
) -> Path:
    """The plugin's log directory of one job: ``<logdir>/rule_<rule>/<values joined by _>``.

    ``logdir`` (the plugin's ``slurm-logdir``) defaults to ``.snakemake/slurm_logs``; a
    relative one is relative to ``workdir``. The wildcard values keep the given order.
    """
    base = Path(logdir) if logdir else SLURM_LOGDIR
    if not base.is_absolute():
        base = Path(workdir) / base
    values = "_".join(wildcards_dict(wildcards).values()).replace("/", "_")
    directory = base / f"rule_{rule}"
    return directory / values if values else directory


def looks_like_slurm_log(path: str, rule: str) -> bool:
    """`<logdir>/rule_<rule>/<wildcards>/<slurm id>.log` (the plugin's layout)."""
    p = Path(path)
    return bool(_LOG_NAME.fullmatch(p.name)) and any(
        part in (f"rule_{rule}", f"group_{rule}") or part.startswith("group_") for part in p.parts
    )


def new_slurm_logs(
    directory: Path, newer_than: float | None, skip_ids: set[str]
) -> list[tuple[str, Path]]:
    """(SLURM job id, path) of the ``*.log`` files in `directory` modified after
    `newer_than` (epoch seconds; None: all), except `skip_ids`; newest first. One listing;
    [] when there is no such directory (a local run)."""
    found: list[tuple[float, str, Path]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".log"):
                    continue
                job_id = entry.name[: -len(".log")]
                if job_id in skip_ids:
                    continue
                try:
                    if not entry.is_file():
                        continue
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                if newer_than is not None and mtime <= newer_than:
                    continue
                found.append((mtime, job_id, Path(entry.path)))
    except OSError:
        return []
    found.sort(reverse=True)
    return [(job_id, path) for _, job_id, path in found]
