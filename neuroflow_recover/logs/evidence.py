"""The text a failed job is classified by: the main log's error, its rule and SLURM logs."""

from __future__ import annotations

from pathlib import Path

from ..files import read_tail_noted, tail_text
from .lines import exit_code_from_text, without_commands
from .records import FailedJob

EVIDENCE_MAX_BYTES = 256 * 1024


def resolve(path: str, workdir: Path) -> Path:
    """A path from the main log, relative to the workflow directory or absolute.

    An absolute path that does not exist (the workflow directory moved, or a fixture) is
    retried relative to `workdir` from its `.snakemake/` component on.
    """
    p = Path(path)
    if not p.is_absolute():
        return workdir / p
    if p.exists():
        return p
    parts = p.parts
    if ".snakemake" in parts:
        return workdir.joinpath(*parts[parts.index(".snakemake") :])
    return p


def read_evidence(job: FailedJob, workdir: str | Path, max_bytes: int = EVIDENCE_MAX_BYTES) -> str:
    """The text to classify a failed job by, most specific last.

    1. the main log's error text (RuleException / CalledProcessError / SLURM message, without
       the command it quotes) and
       the lines the job printed into it (a rule without `log:`); only these when sbatch
       refused the job (it never ran);
    2. each rule log file (tail): the copy printed into the main log by
       `--show-failed-logs` when there is one (it belongs to exactly this failure), else the
       file as it is now (Snakemake deletes a rule's logs before each attempt, so it may be
       gone or belong to a later run);
    3. the SLURM log of the last attempt (tail): the tool's stderr, exit code and lines like
       `DUE TO TIME LIMIT` or `exceeded memory limit` are only there under SLURM.

    Missing or unreadable files are noted, never raised.
    """
    workdir = Path(workdir)
    sections = [
        f"--- main log {job.run_id}: rule {job.rule}, jobid {job.jobid}",
        tail_text(without_commands(job.message), max_bytes),
    ]
    if job.printed:
        sections += ["--- printed into the main log", tail_text(job.printed, max_bytes)]
    if job.submit_failed:
        return _joined(sections)  # never ran: its rule and SLURM logs are of other attempts
    for name in job.log_files:
        shown = job.shown_logs.get(name)
        if shown is not None:
            sections += [
                f"--- rule log {name} (as shown in the main log)",
                tail_text(shown, max_bytes),
            ]
            continue
        text, note = read_tail_noted(resolve(name, workdir), max_bytes)
        sections.append(f"--- rule log {name}" + (f" ({note})" if note else ""))
        if text is not None:
            sections.append(text)
    if job.slurm_log:
        text, note = read_tail_noted(resolve(job.slurm_log, workdir), max_bytes)
        if text is None and job.slurm_log in job.shown_logs:
            text = tail_text(job.shown_logs[job.slurm_log], max_bytes)
            note = "as shown in the main log"
        sections.append(f"--- SLURM log {job.slurm_log}" + (f" ({note})" if note else ""))
        if text is not None:
            sections.append(text)
    return _joined(sections)


def _joined(sections: list[str]) -> str:
    return "\n".join(s.rstrip("\n") for s in sections) + "\n"


def slurm_exit_code(
    job: FailedJob, workdir: str | Path, max_bytes: int = EVIDENCE_MAX_BYTES
) -> int | None:
    """The exit code in the last attempt's SLURM log (None when absent or not stated)."""
    if not job.slurm_log:
        return None
    text, _ = read_tail_noted(resolve(job.slurm_log, Path(workdir)), max_bytes)
    return exit_code_from_text(text) if text else None
