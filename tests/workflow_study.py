"""Helpers for the workflow tests: a study directory and Snakemake runs on it.

A study is a directory Snakemake runs in (``--directory``) with the repository's
workflow/Snakefile: ``config.yaml``, ``sessions.tsv``, a license file, the heuristic and
either empty DICOM directories (dry runs) or synthetic DICOMs from
example/make_example_data.py (real runs, with the example's stand-ins for the two BIDS Apps).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from helpers import REPO, SNAKEFILE, tool_env

TIMEOUT = 900  # seconds; generous for a loaded 2-core machine


def env() -> dict[str, str]:
    return tool_env()


def labels(count: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, count + 1)]


def write_sheet(root: Path, pairs: list[tuple[str, str]], dicom_root: str = "dicom") -> None:
    rows = ["participant_id\tsession_id\tdicom_dir"]
    rows += [f"{s}\t{e}\t{dicom_root}/sub-{s}/ses-{e}" for s, e in pairs]
    (root / "sessions.tsv").write_text("\n".join(rows) + "\n")


def make_study(
    root: Path,
    subjects: int,
    sessions: int,
    real: bool = False,
    config: dict | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> Path:
    """A study of `subjects` x `sessions` (sheet rows `pairs`, default all of them).

    real=False: empty DICOM directories and the production container settings (dry runs).
    real=True: synthetic DICOMs and the example's stand-ins (runtime none) for real runs.
    `config` is merged over the generated config.yaml.
    """
    root.mkdir(parents=True, exist_ok=True)
    all_pairs = [(s, e) for s in labels(subjects) for e in labels(sessions)]
    if real:
        subprocess.run(
            [sys.executable, str(REPO / "example" / "make_example_data.py"), "--out", "data",
             "--subjects", str(subjects), "--sessions", str(sessions)],
            cwd=root, check=True, capture_output=True, timeout=TIMEOUT,
        )  # fmt: skip
        dicom_root = "data/dicom"
    else:
        for s, e in all_pairs:
            (root / "dicom" / f"sub-{s}" / f"ses-{e}").mkdir(parents=True, exist_ok=True)
        dicom_root = "dicom"
    write_sheet(root, pairs if pairs is not None else all_pairs, dicom_root)
    shutil.copy2(REPO / "config" / "heuristic.py", root / "heuristic.py")
    (root / "license.txt").write_text("test license\n")
    cfg: dict = {
        "sessions": "sessions.tsv",
        "heuristic": "heuristic.py",
        "freesurfer_license": "license.txt",
        "templateflow_home": None,
    }
    if real:
        standins = REPO / "example" / "standins"
        small = {"mem_mb": 1000, "runtime": 10, "threads": 1, "disk_mb": 500}
        cfg["stages"] = {
            "bids_conversion": {"resources": small},
            "qsiprep": {
                "container": {"runtime": "none", "command": str(standins / "qsiprep_standin.py")},
                "resources": small,
            },
            "qsirecon": {
                "container": {"runtime": "none", "command": str(standins / "qsirecon_standin.py")},
                "resources": small,
            },
            "qsiparc": {"resources": small},
        }
    for key, value in (config or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            _merge(cfg[key], value)
        else:
            cfg[key] = value
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def _merge(base: dict, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def snakemake(
    root: Path, *args: str, profile: str | None = "none", env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    """Run Snakemake on the study (profile: a path, or "none" for no workflow profile)."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--directory", str(root), "--configfile", str(root / "config.yaml"),
        "--workflow-profile", profile or "none", *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=TIMEOUT, env={**env(), **(env_extra or {})},
        cwd=root,
    )


def dry_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(root, "-n", "-p", *args)


JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def jobs(output: str) -> list[dict]:
    """The job blocks of a dry run: rule, wildcards, resources, threads, shell command."""
    found: list[dict] = []
    current: dict | None = None
    for line in output.splitlines():
        header = JOB_HEADER.match(line.strip()) if not line.startswith(" ") else None
        if header:
            current = {"rule": header.group(1), "wildcards": {}, "resources": {}, "shell": ""}
            found.append(current)
            continue
        if current is None:
            continue
        text = line.strip()
        if text.startswith("wildcards:"):
            current["wildcards"] = dict(
                item.split("=", 1)
                for item in text[len("wildcards:") :].strip().split(", ")
                if "=" in item
            )
        elif text.startswith("resources:"):
            current["resources"] = dict(
                item.split("=", 1)
                for item in text[len("resources:") :].strip().split(", ")
                if "=" in item
            )
        elif text.startswith("threads:"):
            current["threads"] = int(text.split(":", 1)[1])
        elif text.startswith("output:"):
            current["output"] = text[len("output:") :].strip().split(", ")
        elif text.startswith("Shell command:"):
            current["shell"] = text[len("Shell command:") :].strip()
    return found


def job_counts(output: str) -> Counter:
    """The `Job stats` table of a dry run as rule -> count (without `total`)."""
    counts: Counter = Counter()
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(line.strip()) <= {"-", " "}:
                break
    return counts
