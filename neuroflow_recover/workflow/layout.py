"""Every path the workflow reads or writes, its rules and stages, job keys, final targets.

All paths are relative to the workflow directory (where Snakemake runs) unless the config
gives absolute ones. Each path function takes labels without prefixes; pass
``"{subject}"``/``"{session}"`` to get the Snakemake pattern of a rule::

    <output_dir>/bids/dataset_description.json
    <output_dir>/bids/sub-S/ses-E/<datatype>/sub-S_ses-E_<entities>            HeudiConv
    <output_dir>/derivatives/qsiprep/sub-S.html                                QSIPrep report
    <output_dir>/derivatives/qsiprep/sub-S/ses-E/dwi/sub-S_ses-E_<preproc_dwi>
    <output_dir>/derivatives/qsirecon/sub-S/ses-E/dwi/sub-S_ses-E_<dseg>        per atlas
    <output_dir>/derivatives/qsirecon/atlases/atlas-A/atlas-A_dseg.tsv
    <output_dir>/derivatives/qsirecon/derivatives/qsirecon-W/sub-S/ses-E/dwi/sub-S_ses-E_<map>
    <output_dir>/derivatives/qsiparc/sub-S/ses-E/dwi/atlas-A/
        sub-S_ses-E_atlas-A_software-W'_<map entities>_diffmap.tsv              QSIParc
    <output_dir>/logs/<rule>/sub-S[_ses-E].log
    <output_dir>/benchmarks/<rule>/sub-S[_ses-E].tsv
    <work_dir>/<stage>/sub-S[_ses-E]/                                           BIDS App scratch
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError, SheetError
from .sheet import Session

RULE_STAGE: dict[str, str] = {
    "heudiconv_convert": "bids_conversion",
    "qsiprep_preprocess": "qsiprep",
    "qsirecon_reconstruct": "qsirecon",
    "qsiparc_parcellate": "qsiparc",
}
STAGE_RULE: dict[str, str] = {stage: rule for rule, stage in RULE_STAGE.items()}
# the rules whose tool gets a work directory (BIDS Apps), and whether it is per session
WORK_RULES: dict[str, bool] = {"qsiprep_preprocess": False, "qsirecon_reconstruct": True}
# the tiny local rule writing bids/dataset_description.json once (no stage, no resources)
DESCRIBE_RULE = "bids_describe"
MAX_OUTPUT_IN_KEY = 400
# QSIParc's entity pattern (qsiparc.discover._ENTITY_RE): how it names its outputs
_ENTITY_RE = re.compile(r"(?P<key>[a-zA-Z]+)-(?P<val>[a-zA-Z0-9]+)")


def stage_of(rule: str, *, strict: bool = False) -> str:
    """The stage (seed pipeline name) of a rule; a rule outside the workflow is its own
    pipeline, or with ``strict`` a ConfigError."""
    if rule in RULE_STAGE:
        return RULE_STAGE[rule]
    if strict:
        raise ConfigError(
            f"rule {rule!r} has no stage; known rules: {', '.join(sorted(RULE_STAGE))}"
        )
    return rule


def wildcards_dict(wildcards: Any) -> dict[str, str]:
    """Snakemake's Wildcards (a Namedlist), a mapping or None -> a plain str dict."""
    if wildcards is None:
        return {}
    items = wildcards.items() if hasattr(wildcards, "items") else dict(wildcards).items()
    return {str(k): str(v) for k, v in items}


def wildcards_key(wildcards: Any) -> str:
    """``{"subject": "01", "session": "02"}`` -> ``session-02_subject-01``.

    Sorted ``key-value`` pairs joined by ``_`` (``all`` without wildcards): a stable,
    file-name-safe key for one job (attempt records, dead-letter entries).
    """
    if type(wildcards) is not dict:  # a plain dict of str (the usual case) is used as is
        wildcards = wildcards_dict(wildcards)
    return "_".join(f"{k}-{v}" for k, v in sorted(wildcards.items())) or "all"


def job_key(rule: str, wildcards: Any, outputs: Iterable[str] = ()) -> str:
    """``<rule>/<wildcards key>``, e.g. ``qsiparc_parcellate/session-01_subject-01``.

    A job whose wildcards are unknown (a rule without wildcards, a log that printed no job
    block) is known by its first output instead, ``<rule>/output=<path>``: two jobs of one
    run never share an output. Only a job with neither is ``<rule>/all``.
    """
    if wildcards_dict(wildcards):
        return f"{rule}/{wildcards_key(wildcards)}"
    first = next(iter(outputs or ()), None)
    if not first:
        return f"{rule}/all"
    if len(first) > MAX_OUTPUT_IN_KEY:  # keys are at most 512 characters; keep them unique
        digest = hashlib.sha1(first.encode("utf-8", "replace")).hexdigest()[:12]
        first = f"{first[: MAX_OUTPUT_IN_KEY - 16]}...{digest}"
    return f"{rule}/output={first}"


@dataclass(frozen=True)
class ScalarMap:
    """One scalar map QSIRecon writes per session (config ``stages.qsirecon.scalar_maps``)."""

    workflow: str  # derivatives/qsirecon-<workflow>
    file: str  # entities after sub-S_ses-E_, e.g. space-ACPC_model-dki_param-fa_dwimap.nii.gz

    @functools.cached_property
    def software(self) -> str:
        """The name QSIParc gives the workflow (``MRtrix3_act-HSVS`` -> ``MRtrix3actHSVS``)."""
        return self.workflow.replace("_", "").replace("-", "")

    @functools.cache  # noqa: B019 - a few maps per config, each asked once per session
    def entities(self) -> str:
        """``space-ACPC_model-dki_param-fa``: the map's entities as QSIParc copies them."""
        pairs = {m.group("key"): m.group("val") for m in _ENTITY_RE.finditer(self.file)}
        return "_".join(f"{k}-{v}" for k, v in pairs.items() if k not in ("sub", "ses"))


@dataclass(frozen=True)
class Layout:
    output_dir: str
    work_dir: str
    bids_files: tuple[str, ...]  # <datatype>/<entities> per session
    preproc_dwi: str
    atlases: tuple[str, ...]
    dseg: str  # entities with {atlas}
    scalar_maps: tuple[ScalarMap, ...]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | "Layout") -> "Layout":
        if isinstance(cfg, Layout):
            return cfg
        stages = cfg["stages"]
        return cls(
            output_dir=str(cfg["output_dir"]).rstrip("/") or ".",
            work_dir=str(cfg["work_dir"]).rstrip("/") or ".",
            bids_files=tuple(stages["bids_conversion"]["files"]),
            preproc_dwi=stages["qsiprep"]["preproc_dwi"],
            atlases=tuple(stages["qsirecon"]["atlases"]),
            dseg=stages["qsirecon"]["dseg"],
            scalar_maps=tuple(
                ScalarMap(m["workflow"], m["file"]) for m in stages["qsirecon"]["scalar_maps"]
            ),
        )

    def within(self, workdir: str | os.PathLike) -> Layout:
        """The same layout with relative directories made absolute against `workdir`."""

        def absolute(path: str) -> str:
            return path if os.path.isabs(path) else os.path.normpath(Path(workdir).absolute() / path)

        return replace(self, output_dir=absolute(self.output_dir), work_dir=absolute(self.work_dir))

    # --- directories ---------------------------------------------------------------
    @functools.cached_property
    def bids_dir(self) -> str:
        return f"{self.output_dir}/bids"

    @functools.cached_property
    def qsiprep_dir(self) -> str:
        return f"{self.output_dir}/derivatives/qsiprep"

    @functools.cached_property
    def qsirecon_dir(self) -> str:
        return f"{self.output_dir}/derivatives/qsirecon"

    @functools.cached_property
    def qsiparc_dir(self) -> str:
        return f"{self.output_dir}/derivatives/qsiparc"

    @functools.cached_property
    def logs_dir(self) -> str:
        return f"{self.output_dir}/logs"

    @functools.cached_property
    def benchmarks_dir(self) -> str:
        return f"{self.output_dir}/benchmarks"

    # --- BIDS (HeudiConv) ----------------------------------------------------------
    @functools.cached_property
    def dataset_description(self) -> str:
        return f"{self.bids_dir}/dataset_description.json"

    @functools.cached_property
    def _bids_parts(self) -> tuple[tuple[str, str], ...]:
        return tuple(tuple(item.split("/", 1)) for item in self.bids_files)

    def bids_session_files(self, subject: str, session: str) -> list[str]:
        prefix = _prefix(subject, session)
        where = f"{self.bids_dir}/sub-{subject}/ses-{session}"
        return [f"{where}/{datatype}/{prefix}_{entities}" for datatype, entities in self._bids_parts]

    # --- QSIPrep -------------------------------------------------------------------
    def qsiprep_report(self, subject: str) -> str:
        return f"{self.qsiprep_dir}/sub-{subject}.html"

    def qsiprep_preproc_dwi(self, subject: str, session: str) -> str:
        return (
            f"{self.qsiprep_dir}/sub-{subject}/ses-{session}/dwi/"
            f"{_prefix(subject, session)}_{self.preproc_dwi}"
        )

    # --- QSIRecon ------------------------------------------------------------------
    def qsirecon_dsegs(self, subject: str, session: str) -> list[str]:
        return [
            f"{self.qsirecon_dir}/sub-{subject}/ses-{session}/dwi/"
            f"{_prefix(subject, session)}_{self.dseg.replace('{atlas}', atlas)}"
            for atlas in self.atlases
        ]

    def qsirecon_scalar_maps(self, subject: str, session: str) -> list[str]:
        return [
            f"{self.qsirecon_dir}/derivatives/qsirecon-{m.workflow}/sub-{subject}/"
            f"ses-{session}/dwi/{_prefix(subject, session)}_{m.file}"
            for m in self.scalar_maps
        ]

    def qsirecon_atlas_tables(self) -> list[str]:
        """Shared by all sessions: checked by the step runner, never a declared output."""
        return [
            f"{self.qsirecon_dir}/atlases/atlas-{atlas}/atlas-{atlas}_dseg.tsv"
            for atlas in self.atlases
        ]

    # --- QSIParc -------------------------------------------------------------------
    def qsiparc_diffmaps(self, subject: str, session: str) -> list[str]:
        out = []
        for atlas in self.atlases:
            for scalar in self.scalar_maps:
                out.append(
                    f"{self.qsiparc_dir}/sub-{subject}/ses-{session}/dwi/atlas-{atlas}/"
                    f"{_prefix(subject, session)}_atlas-{atlas}_software-{scalar.software}_"
                    f"{scalar.entities()}_diffmap.tsv"
                )
        return out

    # --- logs, benchmarks, scratch -------------------------------------------------
    def log(self, rule: str, subject: str, session: str | None = None) -> str:
        return f"{self.logs_dir}/{rule}/{_job_name(subject, session)}.log"

    def benchmark(self, rule: str, subject: str, session: str | None = None) -> str:
        return f"{self.benchmarks_dir}/{rule}/{_job_name(subject, session)}.tsv"

    def work(self, stage: str, subject: str, session: str | None = None) -> str:
        return f"{self.work_dir}/{stage}/{_job_name(subject, session)}"

    def job_work(self, rule: str, wildcards: Mapping[str, str]) -> str | None:
        """The work directory of a job of ``rule`` (None: its tool gets none)."""
        if rule not in WORK_RULES:
            return None
        session = wildcards.get("session") if WORK_RULES[rule] else None
        return self.work(RULE_STAGE[rule], wildcards["subject"], session)

    @property
    def describe_log(self) -> str:
        return f"{self.logs_dir}/{DESCRIBE_RULE}/dataset_description.log"

    # --- declared outputs per rule -------------------------------------------------
    def rule_outputs(self, rule: str, wildcards: Mapping[str, str]) -> list[str]:
        """The files a job of ``rule`` declares (what Snakemake checks and deletes)."""
        subject = wildcards.get("subject", "{subject}")
        session = wildcards.get("session", "{session}")
        if rule == "heudiconv_convert":
            return self.bids_session_files(subject, session)
        if rule == "qsiprep_preprocess":
            return [self.qsiprep_report(subject)]
        if rule == "qsirecon_reconstruct":
            return self.qsirecon_dsegs(subject, session) + self.qsirecon_scalar_maps(
                subject, session
            )
        if rule == "qsiparc_parcellate":
            return self.qsiparc_diffmaps(subject, session)
        if rule == DESCRIBE_RULE:
            return [self.dataset_description]
        raise KeyError(f"unknown rule {rule!r}")


def _prefix(subject: str, session: str) -> str:
    return f"sub-{subject}_ses-{session}"


def _job_name(subject: str, session: str | None) -> str:
    return f"sub-{subject}" if session is None else _prefix(subject, session)


def final_targets(
    cfg: Mapping[str, Any] | Layout, sessions: Iterable[Session], subject: str | None = None
) -> list[str]:
    """The QSIParc outputs of every session of ``subject`` (of every subject if None).

    ``rule all`` requests exactly these; re-running them for one subject after a failure
    re-runs the failed job and everything downstream of it for that subject only.
    """
    layout = Layout.from_config(cfg)
    chosen = [s for s in sessions if subject is None or s.subject == subject]
    if subject is not None and not chosen:
        raise SheetError(f"subject {subject!r} is not in the sessions sheet")
    return [path for s in chosen for path in layout.qsiparc_diffmaps(s.subject, s.session)]
