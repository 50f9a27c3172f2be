#!/usr/bin/env python3
"""STAND-IN for QSIPrep (participant level) in the neuroflow example -- NOT QSIPrep.

Same command line as the real app as neuroflow calls it:

    qsiprep_standin.py BIDS_DIR OUT_DIR participant --participant-label 01 --session-id 01 02
        --output-resolution 1.6 --fs-license-file LICENSE --nprocs 8 --omp-nthreads 8
        --mem 32000 -w WORK --skip-bids-validation --notrack

Writes QSIPrep's layout for each subject, one anatomical reference over all sessions:

    OUT/dataset_description.json
    OUT/sub-S.html
    OUT/sub-S/anat/sub-S_space-ACPC_desc-preproc_T1w.nii.gz, ..._desc-brain_mask.nii.gz
    OUT/sub-S/ses-E/dwi/sub-S_ses-E_space-ACPC_desc-preproc_dwi.{nii.gz,bval,bvec,b}
    OUT/sub-S/ses-E/dwi/sub-S_ses-E_space-ACPC_desc-brain_mask.nii.gz

Processing nodes are modelled with nipype's cache (standin_common.run_nodes): each node
leaves its result in the work directory (-w) and a rerun skips the nodes it finds there.
The "preprocessing" is a nearest-neighbour resampling of the input DWI to the output
resolution (isotropic voxels): small valid NIfTI for the downstream stand-in and QSIParc.
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

APP = "QSIPrep"
VERSION = "1.0.1-standin"
# the processing nodes of one subject (nipype's names; each cached in the work directory)
NODES = [
    "anat_preproc_wf.skullstrip",
    "anat_preproc_wf.anat_normalization",
    "dwi_preproc_wf.pre_hmc_wf.dwi_denoise",
    "dwi_preproc_wf.hmc_sdc_wf.eddy",
    "dwi_preproc_wf.b0_anat_coreg",
    "dwi_preproc_wf.dwi_finalize_wf.transform_dwis_t1",
]
PEAK_NODE = "dwi_preproc_wf.hmc_sdc_wf.eddy"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsiprep", description="STAND-IN for QSIPrep")
    add_bids_app_arguments(p)
    p.add_argument("--output-resolution", "--output_resolution", type=float, required=True)
    p.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true")
    p.add_argument("--anat-modality", choices=["T1w", "T2w", "none"], default="T1w")
    return p


def resample(img: nib.Nifti1Image, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour resampling of the first three axes to isotropic `resolution` mm."""
    data = np.asanyarray(img.dataobj)
    zooms = np.array(img.header.get_zooms()[:3], dtype=float)
    shape = np.array(data.shape[:3])
    new_shape = np.maximum(1, np.round(shape * zooms / resolution)).astype(int)
    index = [
        np.minimum((np.arange(n) * resolution / z).astype(int), s - 1)
        for n, z, s in zip(new_shape, zooms, shape)
    ]
    out = data[np.ix_(*index)] if data.ndim == 3 else data[np.ix_(*index, np.arange(data.shape[3]))]
    affine = img.affine.copy()
    affine[:3, :3] = np.diag([resolution] * 3) @ np.diag(np.sign(np.diag(img.affine[:3, :3])))
    return out, affine


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_paths(p, args)
    if args.output_resolution <= 0:
        p.error("--output-resolution must be positive")
    log(BANNER.format(app=APP))
    log(f"Running {APP} version {VERSION}: nprocs={args.nprocs} omp={args.omp_nthreads} mem={args.mem}")
    bids, out, res = args.input_dir, args.output_dir, args.output_resolution
    out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    write_json(out / "dataset_description.json", dataset_description(APP, VERSION))
    for subject in participants(p, args, bids):
        sessions = sessions_of(args, bids / f"sub-{subject}")
        if not sessions:
            fail(APP, f"No dwi images found for participant {subject}. All workflows require dwi images.")
        for session in sessions:  # the input is checked before any processing
            dwi = bids / f"sub-{subject}" / f"ses-{session}" / "dwi" / f"sub-{subject}_ses-{session}_dwi.nii.gz"
            if not dwi.is_file():
                fail(APP, f"No dwi images found for participant {subject} session {session} ({dwi}).")
        run_nodes("QSIPREP", args.work_dir, f"qsiprep_1_0_wf/sub_{subject}_wf", NODES, PEAK_NODE, args.mem)
        anat_written = False
        lines = []
        for session in sessions:
            prefix = f"sub-{subject}_ses-{session}"
            source = bids / f"sub-{subject}" / f"ses-{session}"
            dwi = source / "dwi" / f"{prefix}_dwi.nii.gz"
            if not dwi.is_file():
                fail(APP, f"No dwi images found for participant {subject} session {session} ({dwi}).")
            bval = np.loadtxt(source / "dwi" / f"{prefix}_dwi.bval", ndmin=1)
            bvec = np.loadtxt(source / "dwi" / f"{prefix}_dwi.bvec", ndmin=2)
            data, affine = resample(nib.load(str(dwi)), res)
            mean = data.mean(axis=3) if data.ndim == 4 else data
            mask = (mean > mean.mean() * 0.5).astype(np.uint8)
            target = out / f"sub-{subject}" / f"ses-{session}" / "dwi"
            stem = f"{prefix}_space-ACPC"
            save_nifti(data, affine, target / f"{stem}_desc-preproc_dwi.nii.gz", np.float32)
            save_nifti(mask, affine, target / f"{stem}_desc-brain_mask.nii.gz", np.uint8)
            write_text_atomic(target / f"{stem}_desc-preproc_dwi.bval", " ".join(f"{b:g}" for b in bval) + "\n")
            write_text_atomic(
                target / f"{stem}_desc-preproc_dwi.bvec",
                "\n".join(" ".join(f"{v:g}" for v in row) for row in bvec) + "\n",
            )
            write_text_atomic(
                target / f"{stem}_desc-preproc_dwi.b",
                "\n".join(f"{x:g} {y:g} {z:g} {b:g}" for (x, y, z), b in zip(bvec.T, bval)) + "\n",
            )
            lines.append(f"ses-{session}: {data.shape} at {res:g} mm")
            t1w = source / "anat" / f"{prefix}_T1w.nii.gz"
            if not anat_written and t1w.is_file():
                anat, anat_affine = resample(nib.load(str(t1w)), res)
                anat_dir = out / f"sub-{subject}" / "anat"
                save_nifti(anat, anat_affine, anat_dir / f"sub-{subject}_space-ACPC_desc-preproc_T1w.nii.gz", np.float32)
                save_nifti(
                    (anat > anat.mean()).astype(np.uint8), anat_affine,
                    anat_dir / f"sub-{subject}_space-ACPC_desc-brain_mask.nii.gz", np.uint8,
                )  # fmt: skip
                anat_written = True
        if not anat_written:
            fail(APP, f"No T1w images found for participant {subject} (--anat-modality T1w).")
        report(out / f"sub-{subject}.html", APP, subject, lines)
        log(f"sub-{subject}: {len(sessions)} session(s) written to {out}")
    log(f"{APP} finished successfully!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
