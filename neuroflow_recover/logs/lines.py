"""The lines of a Snakemake 8.x / 9.x main log: their patterns and the parsers of their values.

The formats (Snakemake 8.30 and 9.27, snakemake-executor-plugin-slurm 1.x and 2.8) and how
they differ are described in docs/snakemake-notes.md.
"""

from __future__ import annotations

import re
from datetime import datetime

_MONTHS = {
    m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)
}
TIMESTAMP = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})\]"
)
JOB_HEADER = re.compile(r"(local)?(?:checkpoint|rule) ([A-Za-z_][\w]*):")
JOB_HEADER_PREFIXES = ("localrule ", "rule ", "localcheckpoint ", "checkpoint ")
MESSAGE_JOB = re.compile(r"Job (\d{1,18}): (.*)")
ERROR_HEADER = re.compile(r"Error in rule ([A-Za-z_][\w]*):")
GROUP_ERROR = re.compile(r"Error in group (\S+?):?")  # 8.x
GROUP_MESSAGE = re.compile(r"message: Error in group (\S+)")  # 9.x: indented, no header
# `    key: value` of a job or error block (deeper inside a group job's error)
FIELD = re.compile(r"[ \t]{4,}([A-Za-z_][\w-]*): ?(.*)")
RESTART = re.compile(r"Trying to restart job (\d{1,18})\.")
FINISHED = re.compile(r"Finished jobid: (\d{1,18}) \(Rule: ([\w]+)\)")
FINISHED_8 = re.compile(r"Finished job (\d{1,18})\.")  # Snakemake 8.x: no rule name
PROGRESS = re.compile(r"(\d{1,18}) of (\d{1,18}) steps \(([\d.]+)%\) done")
SUBMITTED = re.compile(r"Job (\d{1,18}) has been submitted with SLURM jobid (\S+) \(log: (.*)\)\.")
ARRAY_SUBMITTED = re.compile(
    r"Submitted array job with Snakemake IDs ((?:\d{1,18},)*\d{1,18})"
    r" and SLURM job ID (\d{1,18})\."
    r" The individual task IDs are (\d{1,18})-(\d{1,18})\."
)
SLURM_FAILED = re.compile(r"SLURM-job '([^']+)' failed.*?SLURM status is: '([A-Z_]+)'")
# sbatch refused a job (plugin 2.x: the error block's message; 1.x: a WorkflowError of the
# run; snakemake-executor-plugin-cluster-generic: "Error submitting jobscript")
SUBMIT_FAILED = re.compile(
    r"SLURM (?:sbatch|job submission) failed|Part of failed array sbatch submission"
    r"|Error submitting jobscript"
)
EXCEPTION_START = re.compile(r"[A-Z]\w*(?:Exception|Error)(?::|\s+in\s)")
# `ValueError: ...` (not `... in file`, not `...Exception`): a Python tool's last line
TOOL_ERROR = re.compile(r"[A-Z]\w*Error:")
MISSING_OUTPUT_JOB = re.compile(
    r"Job (\d{1,18}) +completed successfully, but some output files are missing"
)
MISSING_OUTPUT_RULE = re.compile(r"MissingOutputException in rule (\w+)")
QUOTED_COMMAND = re.compile(r"Command '.*?' returned(?= non-zero exit status)", re.DOTALL)
EXIT_STATUS = re.compile(r"returned non-zero exit status (-?\d{1,9})\b")
DIED_SIGNAL = re.compile(r"died with <Signals\.\w+: (\d{1,3})>")
SRUN_EXIT = re.compile(r"srun: error: .*: tasks? [\d,-]+: Exited with exit code (\d{1,9})\b")
# srun reports a task ended by a signal by the signal's description
SRUN_SIGNALS = {"Killed": 9, "Terminated": 15, "Aborted": 6, "Segmentation fault": 11}
SRUN_SIGNAL = re.compile(
    r"srun: error: .*: tasks? [\d,-]+: (Killed|Terminated|Aborted|Segmentation fault)\b"
)
LIST_SPLIT = re.compile(r", (?=[A-Za-z_][\w]*=)")
LOG_SUFFIX_NOTE = "(check log file(s) for error details)"
# the end of an error block's shell command: 9.x, 8.x ("... note that snakemake uses bash
# strict mode!")
SHELL_END = re.compile(
    r"\s*\((?:command|one of the commands) exited with non-zero exit code[^)]*\)"
)
HEADER_FIELD = re.compile(
    r"  (Date|Snakemake version|Working directory|Command|Workflow ID): (.*)"
)
ELAPSED = re.compile(r"Elapsed time: (?:(\d{1,6}) days?, )?(\d{1,2}):(\d\d):(\d\d(?:\.\d{1,9})?)")
RUN_ID_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d{6}(?:\.\d+)?)")
# lines that occur in every kind of Snakemake main log (used to recognise one)
MARKERS = (
    "Building DAG of jobs...",
    "Assuming unrestricted shared filesystem usage",
    "Unlocked working directory",
    "SNAKEMAKE",
    "Nothing to be done",
    "Select jobs to execute...",
    "Job stats:",
    "Provided cores:",
    "Using shell:",
    "Complete log(s):",
    "Complete log:",
    "Execute ",
    "Provided remote nodes:",
    "Finished job ",
)
# a line only Snakemake prints: a pasted log's uniform indentation is measured on the first
ANCHOR = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} +\d|Building DAG of jobs|SNAKEMAKE$"
    r"|Error in rule \w+:|(?:local)?(?:rule|checkpoint) \w+:$|Select jobs to execute"
    r"|Execute \d+ jobs|Job stats:|Assuming unrestricted shared filesystem|Finished job"
    r"|Complete log|Exiting because|Trying to restart job|Provided (?:cores|remote nodes)"
    r"|Using shell:|Job \d+ has been submitted"
)
# lines that end a free-text section (exception text, shell command; shown logs are exempt)
EXECUTE = re.compile(r"Execute \d+ jobs\.\.\.")
STRUCTURAL_PREFIXES = (
    "Select jobs to execute",
    "Trying to restart job",
    "Finished jobid:",
    "Finished job ",
    "Shutting down",
    "Exiting because",
    "Complete log",
    "Elapsed time:",
    "Waiting at most",
    "Removing output files of failed job",
    "Will exit after finishing",
    "Error in rule ",
    "Error in group ",
    "Job stats:",
    "Building DAG of jobs",
    "Submitted array job",
)
_SMALL_INT = re.compile(r"[0-9]{1,18}")


def is_structural(line: str) -> bool:
    """A line that ends a free-text section (an exception's text, a shell command)."""
    if line.startswith(STRUCTURAL_PREFIXES):
        return True
    if line.startswith("[") and TIMESTAMP.fullmatch(line):
        return True
    if line.startswith(JOB_HEADER_PREFIXES):
        return bool(JOB_HEADER.fullmatch(line))
    if line.startswith("Execute ") and EXECUTE.fullmatch(line):
        return True
    if line.startswith("Job ") and (SUBMITTED.fullmatch(line) or MESSAGE_JOB.fullmatch(line)):
        return True
    return bool(PROGRESS.fullmatch(line))


def small_int(text: str | None) -> int | None:
    return int(text) if text is not None and _SMALL_INT.fullmatch(text.strip()) else None


def parse_timestamp(line: str) -> datetime | None:
    """``[Sat Nov 28 15:32:04 2026]`` -> an aware datetime in the local zone."""
    m = TIMESTAMP.fullmatch(line)
    if not m:
        return None
    month, day, hh, mm, ss, year = m.groups()
    try:
        return datetime(
            int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss)
        ).astimezone()
    except (ValueError, OverflowError, OSError):
        return None


def run_id_time(run_id: str) -> datetime | None:
    """The start time in a main log's name (``2026-11-28T153204.406890``), local zone."""
    m = RUN_ID_STAMP.fullmatch(run_id)
    if not m:
        return None
    try:
        return datetime.strptime(
            m.group(1), "%Y-%m-%dT%H%M%S.%f" if "." in run_id else "%Y-%m-%dT%H%M%S"
        ).astimezone()
    except (ValueError, OverflowError, OSError):
        return None


def is_cut(text: str) -> bool:
    """A value a pager cut at the screen's edge (`less -S` marks it with a final `>`)."""
    return text.endswith(">") and not text.endswith((" >", "->", "=>"))


def split_assignments(text: str) -> dict[str, str]:
    """`subject=01, session=1` / `tmpdir=/tmp, mem=100 MB` -> dict of strings (a value cut
    by a pager is left out)."""
    out: dict[str, str] = {}
    parts = LIST_SPLIT.split(text.strip())
    if parts and is_cut(parts[-1]):
        parts.pop()
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def split_files(text: str) -> list[str]:
    """`a, b (check log file(s) for error details)` -> ["a", "b"] (a path cut by a pager is
    left out: it names no file)."""
    text = text.strip()
    if text.endswith(LOG_SUFFIX_NOTE):
        text = text[: -len(LOG_SUFFIX_NOTE)].rstrip()
    files = [f for f in text.split(", ") if f] if text else []
    if files and is_cut(files[-1]):
        files.pop()
    return files


def without_commands(text: str) -> str:
    """`text` with the commands a RuleException quotes left out: what ran is not what
    happened (a command may contain any words, e.g. the messages it echoes)."""
    return QUOTED_COMMAND.sub("Command '...' returned", text)


def exit_code_from_text(text: str) -> int | None:
    """The exit code a Snakemake/srun text reports (the last one), or None.

    `returned non-zero exit status N` -> N; `died with <Signals.SIGKILL: 9>` -> 128 + 9 (what
    a shell would report); `srun: error: host: task 0: Exited with exit code N` -> N;
    `srun: error: host: task 0: Killed` -> 137 (`Terminated` -> 143).
    """
    best: tuple[int, int] | None = None  # (position, code)
    for pattern, convert in (
        (EXIT_STATUS, int),
        (DIED_SIGNAL, lambda s: 128 + int(s)),
        (SRUN_EXIT, int),
        (SRUN_SIGNAL, lambda s: 128 + SRUN_SIGNALS[s]),
    ):
        for m in pattern.finditer(text):
            code = convert(m.group(1))
            if code < 0:  # Python's returncode for a signal
                code = 128 - code
            if best is None or m.start() >= best[0]:
                best = (m.start(), code)
    return best[1] if best else None
