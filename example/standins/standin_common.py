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
import time
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np

BANNER = "*** STAND-IN {app} for the neuroflow example: NOT the real {app}; synthetic outputs ***"

# How long each processing node takes (seconds, default 0) and how much memory the peak
# node needs (MB, default 0 = none), per app: QSIPREP_STANDIN_STEP_SECONDS,
# QSIRECON_STANDIN_MEM_MB, ... Tests use them to model slow and hungry runs.
STEP_SECONDS = "{prefix}_STANDIN_STEP_SECONDS"
MEM_MB = "{prefix}_STANDIN_MEM_MB"


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


def _nipype_log(message: str) -> None:
    """A line the way nipype's workflow logger prints it."""
    stamp = datetime.now().strftime("%y%m%d-%H:%M:%S,%f")[:-3]
    log(f"{stamp} nipype.workflow INFO:\n\t [Node] {message}")


def _env_number(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "") or 0))
    except ValueError:
        return 0.0


def run_nodes(prefix: str, work: Path, workflow: str, nodes: list[str], peak: str, mem: str | None) -> None:
    """Model nipype's processing nodes and their cache in the work directory.

    Each node takes ``<PREFIX>_STANDIN_STEP_SECONDS`` and leaves its result file in
    ``work/<workflow>/<node>/``; a node whose result is there is not run again ("Cached",
    nipype's words), so a retry that keeps the work directory resumes. The ``peak`` node
    needs ``<PREFIX>_STANDIN_MEM_MB``: given less with ``--mem``, it dies like a Python tool
    out of memory (MemoryError); else it holds that much memory while it runs.
    """
    seconds = _env_number(STEP_SECONDS.format(prefix=prefix))
    need = int(_env_number(MEM_MB.format(prefix=prefix)))
    for node in nodes:
        directory = work / workflow / node
        result = directory / f"result_{node.rsplit('.', 1)[-1]}.pklz"
        fullname = f"{workflow.replace('/', '.')}.{node}"
        _nipype_log(f'Setting-up "{fullname}" in "{directory}".')
        if result.is_file():
            _nipype_log(f'Cached "{fullname}" - collecting precomputed outputs')
            _nipype_log(f'"{fullname}" found cached.')
            continue
        name = node.rsplit(".", 1)[-1]
        _nipype_log(f'Executing "{name}" <standin.{name}>')
        started = time.monotonic()
        held = _hold_memory(name, need, mem) if node == peak and need else None
        time.sleep(seconds)
        del held
        write_text_atomic(result, f"{fullname} done\n")
        _nipype_log(f'Finished "{name}", elapsed time {time.monotonic() - started:.2f}s.')


def _hold_memory(name: str, need_mb: int, mem: str | None) -> bytearray:
    given = int(float(mem)) if mem and mem.replace(".", "", 1).isdigit() else None
    if given is not None and given < need_mb:
        log(f"Node {name} failed to run on host.")
        log("Traceback (most recent call last):")
        log(f'  File "standin/{name}.py", line 1, in run')
        log(f"MemoryError: Unable to allocate {need_mb} MiB (given --mem {given})")
        sys.exit(1)
    block = bytearray(need_mb * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, measurable
    return block
