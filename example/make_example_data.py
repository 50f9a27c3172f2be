#!/usr/bin/env python3
"""Generate synthetic Siemens MR DICOMs and a sessions sheet for the neuroflow example.

Per session: a 16x16x8 T1w series and a 4-volume DWI series (b=0 plus three b=1000
directions), one file per slice, with the standard diffusion tags dcm2niix reads
((0018,9087) b-value, (0018,9089) gradient direction, (0018,9075) directionality). About
40 files / 180 KB per session; deterministic for given labels (fixed UIDs and pixel data).

    python example/make_example_data.py                        # 3 subjects x 2 sessions
    python example/make_example_data.py --out data --subjects 2 --sessions 1

Writes OUT/dicom/sub-<s>/ses-<e>/{t1w,dwi}/*.dcm, OUT/sessions.tsv (dicom_dir written as
OUT/dicom/..., relative to the current directory when OUT is) and OUT/license.txt, a
STAND-IN FreeSurfer license file (the stand-in BIDS Apps only check that it exists).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SHAPE = (16, 16)  # rows, columns
SLICES = 8
SPACING = 2.0  # mm, in-plane and through-plane
# (b-value, unit gradient direction) per DWI volume
DWI_VOLUMES = [
    (0.0, (0.0, 0.0, 0.0)),
    (1000.0, (1.0, 0.0, 0.0)),
    (1000.0, (0.0, 1.0, 0.0)),
    (1000.0, (0.0, 0.0, 1.0)),
]


def uid(*parts: str) -> str:
    """A UID derived from the labels, so every run writes the same files."""
    return generate_uid(entropy_srcs=["neuroflow-example", *parts])


def seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "little")


def base_dataset(path: Path, subject: str, session: str, series: str, number: int) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid(subject, session, series, path.name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Prisma_fit"
    ds.MagneticFieldStrength = 3
    ds.PatientName = f"Example^{subject}"
    ds.PatientID = f"neuroflow-example-{subject}"
    ds.PatientSex = "O"
    ds.PatientAge = "030Y"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid(subject, session, "study")
    ds.StudyID = session
    ds.StudyDescription = "neuroflow example"
    ds.StudyDate = f"2026{int(session) % 12 + 1:02d}01" if session.isdigit() else "20260101"
    ds.StudyTime = "090000"
    ds.AccessionNumber = f"{subject}{session}"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = uid(subject, session, series)
    ds.FrameOfReferenceUID = uid(subject, session, "frame")
    ds.SeriesNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Rows, ds.Columns = SHAPE
    ds.PixelSpacing = [SPACING, SPACING]
    ds.SliceThickness = SPACING
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def write_slice(ds: FileDataset, pixels: np.ndarray, slice_index: int, instance: int) -> None:
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-SHAPE[1] * SPACING / 2, -SHAPE[0] * SPACING / 2, slice_index * SPACING]
    ds.SliceLocation = slice_index * SPACING
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(ds.filename, enforce_file_format=True)


def phantom(rng: np.random.Generator) -> np.ndarray:
    """A smooth blob (the 'brain') plus noise: (slices, rows, columns) in 0..~1000."""
    z, y, x = np.mgrid[0:SLICES, 0 : SHAPE[0], 0 : SHAPE[1]]
    centre = np.array([SLICES, SHAPE[0], SHAPE[1]]) / 2 - 0.5
    radius = ((z - centre[0]) / 4) ** 2 + ((y - centre[1]) / 6) ** 2 + ((x - centre[2]) / 6) ** 2
    return 800 * np.exp(-radius) + rng.uniform(0, 50, size=radius.shape)


def write_t1w(directory: Path, subject: str, session: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed(subject, session, "t1w"))
    volume = phantom(rng)
    for k in range(SLICES):
        ds = base_dataset(directory / f"t1w_{k + 1:03d}.dcm", subject, session, "t1w", 2)
        ds.SeriesDescription = ds.ProtocolName = "t1_mprage_sag"
        ds.SequenceName = "*tfl3d1_16ns"
        ds.ScanningSequence, ds.SequenceVariant = "GR\\IR", "SK\\SP\\MP"
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = 2300, 2.98, 900, 9
        ds.AcquisitionNumber = 1
        write_slice(ds, volume[k], k, k + 1)
    return SLICES


def write_dwi(directory: Path, subject: str, session: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed(subject, session, "dwi"))
    base = phantom(rng)
    instance = 0
    for v, (bvalue, direction) in enumerate(DWI_VOLUMES):
        attenuation = 1.0 if bvalue == 0 else 0.4 + 0.1 * v
        volume = base * attenuation + rng.uniform(0, 20, size=base.shape)
        for k in range(SLICES):
            instance += 1
            path = directory / f"dwi_{v + 1:02d}_{k + 1:03d}.dcm"
            ds = base_dataset(path, subject, session, "dwi", 3)
            ds.SeriesDescription = ds.ProtocolName = "ep2d_diff_4dir"
            ds.SequenceName = "*ep_b0" if bvalue == 0 else f"*ep_b{int(bvalue)}#{v}"
            ds.ScanningSequence, ds.SequenceVariant = "EP", "SK\\SP"
            ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 3200, 89, 90
            ds.InPlanePhaseEncodingDirection = "COL"
            ds.AcquisitionNumber = v + 1
            ds.TemporalPositionIdentifier = v + 1
            ds.DiffusionBValue = bvalue
            ds.DiffusionDirectionality = "NONE" if bvalue == 0 else "DIRECTIONAL"
            if bvalue:
                ds.DiffusionGradientOrientation = list(direction)
            write_slice(ds, volume[k], k, instance)
    return instance


def labels(count: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, count + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="example/data", help="output directory [example/data]")
    parser.add_argument("--subjects", type=int, default=3, help="number of subjects [3]")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per subject [2]")
    args = parser.parse_args(argv)
    if args.subjects < 1 or args.sessions < 1:
        parser.error("--subjects and --sessions must be at least 1")
    out = Path(args.out)
    rows = ["participant_id\tsession_id\tdicom_dir"]
    files = 0
    for subject in labels(args.subjects):
        for session in labels(args.sessions):
            session_dir = out / "dicom" / f"sub-{subject}" / f"ses-{session}"
            files += write_t1w(session_dir / "t1w", subject, session)
            files += write_dwi(session_dir / "dwi", subject, session)
            rows.append(f"{subject}\t{session}\t{session_dir.as_posix()}")
    (out / "sessions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "license.txt").write_text(
        "STAND-IN FreeSurfer license for the neuroflow example (not a real license)\n",
        encoding="utf-8",
    )
    print(
        f"wrote {files} DICOM files for {args.subjects} subject(s) x {args.sessions} "
        f"session(s) under {out / 'dicom'}; sheet {out / 'sessions.tsv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
