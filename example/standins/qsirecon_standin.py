#!/usr/bin/env python3
"""STAND-IN for QSIRecon (participant level) in the neuroflow example -- NOT QSIRecon.

Same command line as the real app as neuroflow calls it:

    qsirecon_standin.py QSIPREP_DIR OUT_DIR participant --participant-label 01
        --session-id 02 --input-type qsiprep --recon-spec dipy_dki --atlases 4S156Parcels
        --fs-license-file LICENSE --nprocs 8 --omp-nthreads 8 --mem 32000 -w WORK --notrack

Like QSIRecon it checks the FreeSurfer license at startup (exit 2). For each session of
the QSIPrep derivatives it writes, on the grid of the preprocessed DWI:

    OUT/dataset_description.json
    OUT/sub-S/ses-E/dwi/sub-S_ses-E_space-ACPC_seg-<atlas>_dseg.nii.gz      per atlas
    OUT/atlases/atlas-<atlas>/atlas-<atlas>_dseg.tsv                        (index, label)
    OUT/derivatives/qsirecon-<Workflow>/sub-S/ses-E/dwi/
        sub-S_ses-E_space-ACPC_model-<m>_param-<p>_dwimap.nii.gz (+ .json)   per scalar

Processing nodes are modelled with nipype's cache in the work directory (-w), as in the
QSIPrep stand-in. The scalar maps are simple functions of the signal (not model fits); each atlas splits
the brain mask into a few regions. Enough for QSIParc to parcellate them for real.
"""

from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np
from standin_common import (
    BANNER,
    add_bids_app_arguments,
    check_paths,
    dataset_description,
    fail,
    log,
    participants,
    report,
    run_nodes,
    save_nifti,
    sessions_of,
    write_json,
    write_text_atomic,
)

APP = "QSIRecon"
VERSION = "1.1.1-standin"
# recon spec -> (workflow folder suffix, [(model, param), ...]) as QSIRecon 1.x names them
RECON_SPECS = {
    "dipy_dki": (
        "DIPYDKI",
        [("dki", p) for p in ("ad", "ak", "kfa", "md", "mk", "mkt", "rd", "rk")]
        + [("tensor", "fa")],
    ),
    "dsi_studio_gqi": ("DSIStudio", [("gqi", "qa"), ("gqi", "gfa"), ("tensor", "fa"), ("tensor", "md")]),
    "amico_noddi": ("NODDI", [("noddi", "icvf"), ("noddi", "isovf"), ("noddi", "od")]),
}
REGIONS = 4  # regions per atlas (quadrants of the brain mask, shifted per atlas)
# the processing nodes of one session (each cached in the work directory)
NODES = ["recon_wf.fit_model", "recon_wf.scalar_maps", "recon_wf.atlas_transform"]
PEAK_NODE = "recon_wf.fit_model"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsirecon", description="STAND-IN for QSIRecon")
    add_bids_app_arguments(p)
    p.add_argument("--input-type", "--input_type", choices=["qsiprep", "ukb", "hcpya"], default="qsiprep")
    p.add_argument("--recon-spec", "--recon_spec", required=True)
    p.add_argument("--atlases", nargs="+", default=[])
    p.add_argument("--output-resolution", "--output_resolution", type=float, default=None)
    p.add_argument("--skip-odf-reports", "--skip_odf_reports", action="store_true")
    return p


def scalar(model: str, param: str, data: np.ndarray, bvals: np.ndarray, mask: np.ndarray):
    """A deterministic map in a plausible range for each parameter name."""
    b0 = data[..., bvals < 100].mean(axis=-1) + 1e-3
    dw = data[..., bvals >= 100].mean(axis=-1) if (bvals >= 100).any() else b0 * 0.5
    ratio = np.clip(dw / b0, 1e-3, 1.0)
    spread = data[..., bvals >= 100].std(axis=-1) / b0 if (bvals >= 100).any() else ratio * 0
    diffusivity = -np.log(ratio) / 1000.0  # mm^2/s
    values = {
        "fa": np.clip(spread * 5, 0, 1),
        "md": diffusivity,
        "ad": diffusivity * 1.3,
        "rd": diffusivity * 0.85,
        "mk": np.clip(ratio * 1.5, 0, 3),
        "ak": np.clip(ratio * 1.2, 0, 3),
        "rk": np.clip(ratio * 1.8, 0, 3),
        "mkt": np.clip(ratio * 1.4, 0, 3),
        "kfa": np.clip(spread * 3, 0, 1),
    }.get(param, ratio)
    return np.where(mask, values, 0).astype(np.float32)


def atlas_labels(mask: np.ndarray, shift: int) -> np.ndarray:
    """1..REGIONS: quadrants of the mask in the x-y plane (rotated per atlas)."""
    x, y = np.indices(mask.shape[:2])
    quadrant = (x >= mask.shape[0] / 2).astype(int) * 2 + (y >= mask.shape[1] / 2).astype(int)
    labels = (quadrant + shift) % REGIONS + 1
    return np.where(mask, labels[..., None], 0).astype(np.int16)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_paths(p, args)
    if args.fs_license_file is None:
        log("ERROR: a valid license file is required for FreeSurfer to run. "
            "QSIRecon looked for an existing license file at several paths, in this order: "
            "1) command line argument ``--fs-license-file``; 2) ``$FS_LICENSE`` environment variable.")  # fmt: skip
        return 2
    if args.recon_spec not in RECON_SPECS:
        # worded like an argparse type check, as QSIRecon's own option validation prints it
        p.error(f"argument --recon-spec: invalid recon spec {args.recon_spec!r} "
                f"(the stand-in knows {', '.join(RECON_SPECS)})")  # fmt: skip
    log(BANNER.format(app=APP))
    log(f"Running {APP} version {VERSION}: spec={args.recon_spec} atlases={args.atlases} "
        f"nprocs={args.nprocs} mem={args.mem}")  # fmt: skip
    workflow, scalars = RECON_SPECS[args.recon_spec]
    src, out = args.input_dir, args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    write_json(out / "dataset_description.json", dataset_description(APP, VERSION))
    derivatives = out / "derivatives" / f"qsirecon-{workflow}"
    write_json(derivatives / "dataset_description.json", dataset_description(APP, VERSION))
    for shift, atlas in enumerate(args.atlases):
        rows = ["index\tlabel"] + [f"{i}\t{atlas}_region{i}" for i in range(1, REGIONS + 1)]
        write_text_atomic(out / "atlases" / f"atlas-{atlas}" / f"atlas-{atlas}_dseg.tsv", "\n".join(rows) + "\n")
    for subject in participants(p, args, src):
        lines = []
        for session in sessions_of(args, src / f"sub-{subject}"):
            dwi_dir = src / f"sub-{subject}" / f"ses-{session}" / "dwi"
            found = sorted(dwi_dir.glob("*_space-ACPC_desc-preproc_dwi.nii.gz"))
            if not found:
                fail(APP, f"No preprocessed DWI for sub-{subject} ses-{session} in {dwi_dir}")
            workflow = f"qsirecon_1_1_wf/sub-{subject}_ses-{session}_{args.recon_spec}"
            run_nodes("QSIRECON", args.work_dir, workflow, NODES, PEAK_NODE, args.mem)
            for dwi in found:
                stem = dwi.name[: -len("_desc-preproc_dwi.nii.gz")]  # keeps sub/ses/.../space
                img = nib.load(str(dwi))
                data = np.asanyarray(img.dataobj).astype(np.float32)
                data = data if data.ndim == 4 else data[..., None]
                bvals = np.loadtxt(str(dwi).replace(".nii.gz", ".bval"), ndmin=1)
                mean = data.mean(axis=-1)
                mask = mean > mean.mean() * 0.5
                target = out / f"sub-{subject}" / f"ses-{session}" / "dwi"
                for shift, atlas in enumerate(args.atlases):
                    save_nifti(atlas_labels(mask, shift), img.affine, target / f"{stem}_seg-{atlas}_dseg.nii.gz", np.int16)
                maps = derivatives / f"sub-{subject}" / f"ses-{session}" / "dwi"
                for model, param in scalars:
                    name = f"{stem}_model-{model}_param-{param}_dwimap"
                    save_nifti(scalar(model, param, data, bvals, mask), img.affine, maps / f"{name}.nii.gz", np.float32)
                    write_json(maps / f"{name}.json", {"Model": model, "Parameter": param, "StandIn": True})
                lines.append(f"ses-{session}: {len(args.atlases)} atlas(es), {len(scalars)} map(s)")
        report(out / f"sub-{subject}.html", APP, subject, lines)
        log(f"sub-{subject}: written to {out}")
    log(f"{APP} finished successfully!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
