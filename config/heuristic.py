"""HeudiConv heuristic for neuroflow: one T1w and one DWI series per session.

Series are recognised by their description and protocol name (one-file-per-slice DICOMs
report dim4 = 1, so volume counts are not used). Derived series (ADC, FA, TRACEW, ...) and
localizers are skipped. When a session holds several matching series (a scan repeated
after motion), the LAST one is converted: the names below must stay unique because the
workflow expects exactly these files (config `stages.bids_conversion.files`):

    sub-<subject>/ses-<session>/anat/sub-<subject>_ses-<session>_T1w.nii.gz (+ .json)
    sub-<subject>/ses-<session>/dwi/sub-<subject>_ses-<session>_dwi.nii.gz (+ .bval .bvec .json)
"""

from __future__ import annotations

import re

# words of the series description / protocol name (split at anything not a letter or digit)
T1W_PREFIXES = ("t1", "mprage", "mp2rage", "spgr", "bravo")
DWI_PREFIXES = ("dwi", "dti", "diff", "dmri", "hardi")
SKIP_WORDS = {"adc", "fa", "colfa", "trace", "tracew", "tensor", "sbref", "localizer", "scout"}


def create_key(template, outtype=("nii.gz",), annotation_classes=None):
    if not template:
        raise ValueError("Template must be a valid format string")
    return template, outtype, annotation_classes


def _words(seq) -> list[str]:
    text = f"{seq.series_description or ''} {seq.protocol_name or ''}".lower()
    return [w for w in re.split(r"[^a-z0-9]+", text) if w]


def _skipped(seq) -> bool:
    image_type = tuple(t.upper() for t in (seq.image_type or ()))
    derived = bool(seq.is_derived or "DERIVED" in image_type)
    return derived or any(word in SKIP_WORDS for word in _words(seq))


def _matches(words: list[str], prefixes: tuple[str, ...]) -> bool:
    return any(word.startswith(prefixes) for word in words)


def infotodict(seqinfo):
    """Map DICOM series to BIDS keys: {key: [series_id, ...]}."""
    t1w = create_key("sub-{subject}/{session}/anat/sub-{subject}_{session}_T1w")
    dwi = create_key("sub-{subject}/{session}/dwi/sub-{subject}_{session}_dwi")
    found = {t1w: [], dwi: []}
    for seq in seqinfo:
        if _skipped(seq):
            continue
        words = _words(seq)
        if _matches(words, DWI_PREFIXES):
            found[dwi].append(seq.series_id)
        elif _matches(words, T1W_PREFIXES):
            found[t1w].append(seq.series_id)
    # the last acquisition of each kind (a repeat replaces the first attempt)
    return {key: ids[-1:] for key, ids in found.items()}
