"""The Snakemake targets that re-run a failed job and what depends on it, nothing else.

Targets are the failed job's own output files plus the final outputs of its subject
(`layout.final_targets(cfg, sessions, subject)`): Snakemake then re-runs the failed job,
every job downstream of it for that subject, and nothing that already finished.
"""

from __future__ import annotations

from typing import Any

from .layout import RULE_STAGE, final_targets


def job_outputs(item: Any) -> list[str]:
    """The output files of a failed job, a JobFailure or a DeadLetterEntry."""
    output = getattr(item, "output", None)
    if output is None:
        details = getattr(item, "error_details", None) or {}
        output = details.get("output", [])
    return [str(path) for path in output or []]


def targets_for(item: Any, cfg: dict, sessions: list | None) -> list[str]:
    """Own outputs + the subject's final targets (only for the workflow's own rules)."""
    targets = job_outputs(item)
    rule = getattr(item, "rule", None)
    wildcards = getattr(item, "wildcards", None) or {}
    subject = wildcards.get("subject")
    if sessions is not None and subject and rule in RULE_STAGE:
        targets += [str(path) for path in final_targets(cfg, sessions, subject)]
    return list(dict.fromkeys(targets))
