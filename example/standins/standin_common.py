"""Shared parts of the STAND-IN BIDS Apps of the neuroflow example (not QSIPrep/QSIRecon).

The stand-ins accept the real apps' command lines (the options neuroflow passes and their
aliases), fail the way the real apps fail on bad input (exit 2 for argument and startup
errors, 1 for a failed run) and write the real output layout with small, valid NIfTI
files. They exist because the BIDS Apps need a container engine and FSL/ANTs/FreeSurfer,
which the development and CI machines do not have. Only example/config.yaml and the tests
use them (container runtime "none"); production rules never name them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

BANNER = "*** STAND-IN {app} for the neuroflow example: NOT the real {app}; synthetic outputs ***"


def add_bids_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional arguments and options shared by QSIPrep and QSIRecon (with aliases)."""
    parser.add_argument("input_dir", metavar="bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("analysis_level", choices=["participant"])
    parser.add_argument(
        "--participant-label", "--participant_label", nargs="+", default=None,
        type=lambda v: v[4:] if v.startswith("sub-") else v,
    )  # fmt: skip
    parser.add_argument(
        "--session-id", "--session_id", nargs="+", default=None,
        type=lambda v: v[4:] if v.startswith("ses-") else v,
    )  # fmt: skip
    parser.add_argument("--fs-license-file", "--fs_license_file", type=Path, default=None)
    parser.add_argument("--nprocs", "--nthreads", "--n_cpus", "--n-cpus", type=int, default=1)
    parser.add_argument("--omp-nthreads", type=int, default=1)
    parser.add_argument("--mem", "--mem_mb", "--mem-mb", dest="mem", default=None)
    parser.add_argument("-w", "--work-dir", type=Path, default=Path("work"))
    parser.add_argument("--notrack", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The real apps' argparse checks: exit 2 with a message."""
    if not args.input_dir.exists():
        parser.error(f"Path does not exist: <{args.input_dir}>.")
    if args.fs_license_file is not None and not args.fs_license_file.is_file():
        parser.error(f"Path should point to a file (or symlink of file): <{args.fs_license_file}>.")


def participants(parser, args, root: Path) -> list[str]:
    """Requested labels (all sub-* of root if none), exit 2 naming missing ones."""
    found = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    wanted = args.participant_label or found
    missing = [label for label in wanted if label not in found]
    if missing:
        log(
            "One or more participant labels were not found in the BIDS directory: "
            + ", ".join(missing)
            + "."
        )
        sys.exit(2)
    return wanted


def sessions_of(args, subject_dir: Path) -> list[str]:
    found = sorted(p.name[4:] for p in subject_dir.glob("ses-*") if p.is_dir())
    return [s for s in (args.session_id or found)]


def log(message: str) -> None:
    print(message, flush=True)


def fail(app: str, message: str, code: int = 1) -> None:
    log(f"ERROR: {message}")
    log(f"{app} failed: Workflow did not execute cleanly")
    sys.exit(code)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file + rename (parallel jobs write shared files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def dataset_description(name: str, version: str) -> dict:
    return {
        "Name": f"{name} outputs (neuroflow example stand-in)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": name, "Version": version, "Description": "neuroflow example STAND-IN"}
        ],
    }


def report(path: Path, app: str, subject: str, lines: list[str]) -> None:
    items = "\n".join(f"<li>{line}</li>" for line in lines)
    write_text_atomic(
        path,
        f"<!DOCTYPE html>\n<html><head><title>sub-{subject} ({app} stand-in)</title></head>\n"
        f"<body><h1>sub-{subject}</h1><p>{BANNER.format(app=app)}</p>\n<ul>\n{items}\n</ul>"
        "</body></html>\n",
    )
