"""Parse Snakemake 9 main logs (local and SLURM runs) into typed records.

`parse_log(path) -> RunLog` reads one `.snakemake/log/<stamp>.snakemake.log` line by line
(a 100 MB log is never held in memory) and returns every job that failed FOR GOOD in that
invocation (`RunLog.failed_jobs`), the jobs that failed and then succeeded on a retry
(`RunLog.recovered`), the jobs that were still running when the log ends
(`RunLog.unfinished`), every job that finished successfully (`RunLog.succeeded`: rule,
wildcards, time; small records) and the run's own errors (`RunLog.errors`, e.g. a
LockException).

`read_evidence(job, workdir)` gathers the text a classifier needs: the main log's error
text, then the rule log files, then the SLURM log of the last attempt (each tail-limited,
missing files tolerated). `exit_code_from_text()` / `slurm_exit_code()` get an exit code
out of a SLURM job log.

The formats (Snakemake 9.27, snakemake-executor-plugin-slurm 2.8) are described in
docs/snakemake-notes.md; the facts this parser relies on:

* a job block is a timestamp line, `localrule X:` / `rule X:` (or `Job N: <message>` for
  rules with `message:`), then `    key: value` lines (`jobid`, `wildcards`, `resources`, ...);
* an error block is a timestamp line, `Error in rule X:`, then `    key: value` lines and
  `    shell:` followed by the command up to `        (command exited with non-zero exit
  code)`; the exception text (`RuleException: ... returned non-zero exit status N.`) comes
  just BEFORE the error block (jobs failing together print their exceptions back to back:
  each is matched to its error block by the shell command it quotes); a
  MissingOutputException has no error block at all; a `run:` block's exception is not in
  the main log;
* a retry shows only as `Trying to restart job N.` and a new job block with the same jobid;
* `Finished jobid: N (Rule: X)` marks success; `Complete log(s):` the end of the run;
* SLURM adds `Job N has been submitted with SLURM jobid M (log: PATH).` and an error
  message `SLURM-job 'M' failed, SLURM status is: 'STATE'. ...`, and appends the SLURM log
  to the error block's `log:`.

Times in the log are local wall-clock times without a zone; they are returned as aware
datetimes in the local zone of the machine that parses the log.

Not handled: group jobs (`Error in group`, indented job blocks) are not parsed.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .errors import LogFormatError

MAX_LINE_BYTES = 1 << 20  # longer lines are split (a binary blob without newlines)
MAX_TEXT_CHARS = 64 * 1024  # error text kept per exception / shell command
MAX_SHOWN_CHARS = 256 * 1024  # --show-failed-logs copy kept per log file
SNIFF_LINES = 200  # a log without any Snakemake line among its first lines is rejected
EVIDENCE_MAX_BYTES = 256 * 1024

LOG_SUFFIX = ".snakemake.log"


@dataclass
class JobAttempt:
    """One job block (`rule X:` / `localrule X:`) of the main log: one attempt of a job."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    resources: dict[str, str]
    output: list[str]
    log_files: list[str]
    started_at: datetime | None = None
    slurm_job_id: str | None = None
    slurm_log: str | None = None
    attempt: int = 1  # ordinal of this attempt within the invocation (1-based)
    input: list[str] = field(default_factory=list)
    threads: int | None = None  # only printed when > 1
    benchmark: str | None = None
    reason: str | None = None
    status: str = "running"  # running | failed | finished
    message: str = ""  # error text of this attempt (when it failed)
    exit_code: int | None = None
    slurm_state: str | None = None
    shell: str | None = None
    ended_at: datetime | None = None
    shown_logs: dict[str, str] = field(default_factory=dict)  # --show-failed-logs copies


@dataclass
class FailedJob:
    """A job that failed for good in one Snakemake invocation (all its attempts used)."""

    log_path: str  # the main log it came from
    run_id: str  # the main log's file name without .snakemake.log
    jobid: int
    rule: str
    wildcards: dict[str, str]
    attempts: int  # attempts made in this invocation (1 + "Trying to restart job N." lines)
    resources: dict[str, str]  # of the last attempt, as printed
    output: list[str]
    log_files: list[str]  # rule log files (without the SLURM log)
    message: (
        str  # the error text of the main log (RuleException / CalledProcessError / SLURM line)
    )
    exit_code: int | None = None
    slurm_job_ids: list[str] = field(default_factory=list)  # every attempt's, in order
    slurm_log: str | None = None  # last attempt's SLURM log
    slurm_state: str | None = None  # e.g. OUT_OF_MEMORY, TIMEOUT, FAILED
    shell: str | None = None
    failed_at: datetime | None = None
    attempt_details: list[JobAttempt] = field(default_factory=list)
    shown_logs: dict[str, str] = field(default_factory=dict)  # --show-failed-logs copies

    @property
    def attempt(self) -> int | None:
        """The workflow's `attempt` resource of the last attempt, when the rule has one."""
        value = self.resources.get("attempt")
        return _small_int(value)


@dataclass
class RecoveredJob:
    """A job that failed at least once and then succeeded on a retry in the same invocation."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    attempts: int
    resources: dict[str, str]  # of the successful attempt
    failures: list[JobAttempt]  # the failed attempts, in order
    finished_at: datetime | None = None


@dataclass(slots=True)
class SucceededJob:
    """A job that finished successfully (`Finished jobid: N`), after its job block."""

    jobid: int
    rule: str
    wildcards: dict[str, str]
    finished_at: datetime | None = None


@dataclass
class RunLog:
    """One Snakemake invocation's main log."""

    path: str
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    # the run reached its end: "Complete log(s):", "steps (100%) done", "Nothing to be
    # done", "Unlocked working directory" or a workflow error (LockException, ...) as the
    # last thing in the log
    complete: bool
    failed: bool  # a job failed for good, or the run ended with its own error (LockException, ...)
    jobs_finished: int
    failed_jobs: list[FailedJob]
    warnings: list[str] = field(default_factory=list)
    recovered: list[RecoveredJob] = field(default_factory=list)
    unfinished: list[JobAttempt] = field(default_factory=list)  # running when the log ends
    errors: list[str] = field(default_factory=list)  # the run's own errors (LockException, ...)
    snakemake_version: str | None = None
    executor: str = "local"  # local | slurm (a SLURM submission line was seen)
    # every job that finished successfully (whose job block was seen), in log order
    succeeded: list[SucceededJob] = field(default_factory=list)


# ---------------------------------------------------------------------------- patterns

_MONTHS = {
    m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)
}
_TIMESTAMP = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})\]"
)
_JOB_HEADER = re.compile(r"(local)?(?:checkpoint|rule) ([A-Za-z_][\w]*):")
_MESSAGE_JOB = re.compile(r"Job (\d{1,18}): (.*)")
_ERROR_HEADER = re.compile(r"Error in rule ([A-Za-z_][\w]*):")
_FIELD = re.compile(r"    ([A-Za-z_][\w-]*): ?(.*)")
_RESTART = re.compile(r"Trying to restart job (\d{1,18})\.")
_FINISHED = re.compile(r"Finished jobid: (\d{1,18}) \(Rule: ([\w]+)\)")
_PROGRESS = re.compile(r"(\d{1,18}) of (\d{1,18}) steps \(([\d.]+)%\) done")
_SUBMITTED = re.compile(
    r"Job (\d{1,18}) has been submitted with SLURM jobid (\S+) \(log: (.*)\)\."
)
_ARRAY_SUBMITTED = re.compile(
    r"Submitted array job with Snakemake IDs ((?:\d{1,18},)*\d{1,18})"
    r" and SLURM job ID (\d{1,18})\."
    r" The individual task IDs are (\d{1,18})-(\d{1,18})\."
)
_SLURM_FAILED = re.compile(r"SLURM-job '([^']+)' failed.*?SLURM status is: '([A-Z_]+)'")
_EXCEPTION_START = re.compile(r"[A-Z]\w*(?:Exception|Error)(?::|\s+in\s)")
_MISSING_OUTPUT_JOB = re.compile(
    r"Job (\d{1,18}) +completed successfully, but some output files are missing"
)
_MISSING_OUTPUT_RULE = re.compile(r"MissingOutputException in rule (\w+)")
_EXIT_STATUS = re.compile(r"returned non-zero exit status (-?\d{1,9})\b")
_DIED_SIGNAL = re.compile(r"died with <Signals\.\w+: (\d{1,3})>")
_SRUN_EXIT = re.compile(r"srun: error: .*: tasks? [\d,-]+: Exited with exit code (\d{1,9})\b")
# srun reports a task ended by a signal by the signal's description
_SRUN_SIGNALS = {"Killed": 9, "Terminated": 15, "Aborted": 6, "Segmentation fault": 11}
_SRUN_SIGNAL = re.compile(
    r"srun: error: .*: tasks? [\d,-]+: (Killed|Terminated|Aborted|Segmentation fault)\b"
)
_LIST_SPLIT = re.compile(r", (?=[A-Za-z_][\w]*=)")
_LOG_SUFFIX_NOTE = " (check log file(s) for error details)"
_SHELL_END = "        (command exited with non-zero exit code)"
_HEADER_FIELD = re.compile(r"  (Date|Snakemake version|Working directory): (.*)")
_ELAPSED = re.compile(r"Elapsed time: (?:(\d{1,6}) days?, )?(\d{1,2}):(\d\d):(\d\d(?:\.\d{1,9})?)")
_RUN_ID_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d{6}(?:\.\d+)?)")
# lines that occur in every kind of Snakemake main log (used to recognise one)
_MARKERS = (
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
    "Execute ",
    "Provided remote nodes:",
)
# lines that end a free-text section (exception text, shell command; shown logs are exempt)
_EXECUTE = re.compile(r"Execute \d+ jobs\.\.\.")
_STRUCTURAL_PREFIXES = (
    "Select jobs to execute",
    "Trying to restart job",
    "Finished jobid:",
    "Shutting down",
    "Exiting because",
    "Complete log(s):",
    "Elapsed time:",
    "Waiting at most",
    "Removing output files of failed job",
    "Will exit after finishing",
    "Error in rule ",
    "Job stats:",
    "Building DAG of jobs",
    "Submitted array job",
)


def _is_structural(line: str) -> bool:
    if line.startswith(_STRUCTURAL_PREFIXES):
        return True
    if line.startswith("[") and _TIMESTAMP.fullmatch(line):
        return True
    if line.startswith(("localrule ", "rule ", "localcheckpoint ", "checkpoint ")):
        return bool(_JOB_HEADER.fullmatch(line))
    if line.startswith("Execute ") and _EXECUTE.fullmatch(line):
        return True
    if line.startswith("Job ") and (_SUBMITTED.fullmatch(line) or _MESSAGE_JOB.fullmatch(line)):
        return True
    return bool(_PROGRESS.fullmatch(line))


_SMALL_INT = re.compile(r"[0-9]{1,18}")


def _small_int(text: str | None) -> int | None:
    return int(text) if text is not None and _SMALL_INT.fullmatch(text.strip()) else None


def _timestamp(line: str) -> datetime | None:
    m = _TIMESTAMP.fullmatch(line)
    if not m:
        return None
    month, day, hh, mm, ss, year = m.groups()
    try:
        return datetime(
            int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss)
        ).astimezone()
    except (ValueError, OverflowError, OSError):
        return None


def _split_assignments(text: str) -> dict[str, str]:
    """`subject=01, session=1` / `tmpdir=/tmp, mem=100 MB` -> dict of strings."""
    out: dict[str, str] = {}
    for part in _LIST_SPLIT.split(text.strip()):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _split_files(text: str) -> list[str]:
    text = text.strip()
    if text.endswith(_LOG_SUFFIX_NOTE.strip()):
        text = text[: -len(_LOG_SUFFIX_NOTE.strip())].rstrip()
    return [f for f in text.split(", ") if f] if text else []


def exit_code_from_text(text: str) -> int | None:
    """The exit code a Snakemake/srun text reports (the last one), or None.

    `returned non-zero exit status N` -> N; `died with <Signals.SIGKILL: 9>` -> 128 + 9 (what
    a shell would report); `srun: error: host: task 0: Exited with exit code N` -> N;
    `srun: error: host: task 0: Killed` -> 137 (`Terminated` -> 143).
    """
    best: tuple[int, int] | None = None  # (position, code)
    for pattern, convert in (
        (_EXIT_STATUS, int),
        (_DIED_SIGNAL, lambda s: 128 + int(s)),
        (_SRUN_EXIT, int),
        (_SRUN_SIGNAL, lambda s: 128 + _SRUN_SIGNALS[s]),
    ):
        for m in pattern.finditer(text):
            code = convert(m.group(1))
            if code < 0:  # Python's returncode for a signal
                code = 128 - code
            if best is None or m.start() >= best[0]:
                best = (m.start(), code)
    return best[1] if best else None


class _Text:
    """A bounded multi-line text: keeps the last `limit` characters (a traceback's end)."""

    __slots__ = ("lines", "size", "dropped", "limit")

    def __init__(self, limit: int = MAX_TEXT_CHARS):
        self.lines: deque[str] = deque()
        self.size = 0
        self.dropped = 0
        self.limit = limit

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > self.limit and len(self.lines) > 1:
            gone = self.lines.popleft()
            self.size -= len(gone) + 1
            self.dropped += 1

    def text(self) -> str:
        body = "\n".join(self.lines)
        if self.dropped:
            return f"[... {self.dropped} line(s) omitted ...]\n{body}"
        return body


@dataclass
class _Exception:
    """An exception text seen in the log, not yet attributed to a job."""

    text: _Text
    timestamp: datetime | None
    lineno: int = 0


class _Parser:
    def __init__(self, path: Path):
        self.path = path
        self.run_id = (
            path.name[: -len(LOG_SUFFIX)] if path.name.endswith(LOG_SUFFIX) else path.stem
        )
        self.jobs: dict[int, list[JobAttempt]] = {}
        self.restarts: dict[int, int] = {}
        self.pending_restart: set[int] = set()
        self.jobs_finished = 0
        self.succeeded: list[SucceededJob] = []
        self.warnings: list[str] = []
        # RuleException texts not yet attributed to an error block (printed just before it)
        self.rule_exceptions: deque[_Exception] = deque(maxlen=64)
        # the run's own exceptions (LockException, ...); the last ones if there are many
        self.run_errors: deque[str] = deque(maxlen=100)
        self.now: datetime | None = None  # last timestamp line
        self.lineno = 0
        self.attempt_line: dict[int, int] = {}  # jobid -> line of its current attempt's block
        self.first_time: datetime | None = None
        self.header_date: datetime | None = None
        self.version: str | None = None
        self.elapsed: timedelta | None = None
        self.seen_marker = False
        self.end_marker = False  # "Complete log(s):", "Nothing to be done", 100% done, unlocked
        self.exiting_failed = False
        self.slurm = False
        self.last_event_terminal_error = False
        # block state
        self.mode = "top"  # top | job | error | shell | exception | shown_header | shown
        self.block: dict[str, str] = {}
        self.block_rule = ""
        self.block_time: datetime | None = None
        self.block_line = 0
        self.shell_text: _Text | None = None
        self.exc: _Exception | None = None
        self.shown_path = ""
        self.shown_sep = ""
        self.shown_text: _Text | None = None
        self.last_error_attempt: JobAttempt | None = None  # where --show-failed-logs copies go

    # ------------------------------------------------------------------ blocks
    def _attempt_for(self, jobid: int) -> JobAttempt | None:
        attempts = self.jobs.get(jobid)
        return attempts[-1] if attempts else None

    def _new_attempt(self, jobid: int, rule: str, fields: dict[str, str], when) -> JobAttempt:
        previous = self.jobs.setdefault(jobid, [])
        attempt = JobAttempt(
            jobid=jobid,
            rule=rule,
            wildcards=_split_assignments(fields.get("wildcards", "")),
            resources=_split_assignments(fields.get("resources", "")),
            output=_split_files(fields.get("output", "")),
            log_files=_split_files(fields.get("log", "")),
            started_at=when,
            attempt=len(previous) + 1,
            input=_split_files(fields.get("input", "")),
            benchmark=fields.get("benchmark") or None,
            reason=fields.get("reason"),
        )
        attempt.threads = _small_int(fields.get("threads"))
        previous.append(attempt)
        self.pending_restart.discard(jobid)
        self.attempt_line[jobid] = self.block_line  # where the attempt's job block starts
        return attempt

    def _end_job_block(self) -> None:
        fields = self.block
        jobid = _small_int(fields.get("jobid"))
        if jobid is None:
            self.warnings.append(f"job block of rule {self.block_rule} without a jobid skipped")
            return
        current = self._attempt_for(jobid)
        if (
            current is not None
            and current.status == "running"
            and jobid not in self.pending_restart
        ):
            # the same attempt printed again (e.g. a group job): merge what is new
            if not current.wildcards:
                current.wildcards = _split_assignments(fields.get("wildcards", ""))
            return
        self._new_attempt(jobid, self.block_rule, fields, self.block_time)

    def _starts_new_exception(self, line: str) -> bool:
        """Parallel jobs print their exceptions back to back: split them."""
        if line == "RuleException:" or line.startswith("Waiting at most"):
            return True
        if line.startswith("MissingOutputException in rule "):
            # it belongs to a preceding "Waiting at most ... for missing files" of its own
            lines = self.exc.text.lines if self.exc is not None else ()
            return not (lines and lines[0].startswith("Waiting at most")) or any(
                x.startswith("MissingOutputException") for x in lines
            )
        return False

    def _claim_exception(self, shell: str | None, since: int) -> _Exception | None:
        """The RuleException of an error block, printed after the attempt started: for a shell
        rule the one quoting its command (parallel jobs interleave), else the most recent."""
        candidates = [e for e in self.rule_exceptions if e.lineno > since]
        if not candidates:
            return None
        first = shell.strip().splitlines()[0].strip() if shell and shell.strip() else ""
        if first:
            chosen = next((e for e in reversed(candidates) if first in e.text.text()), None)
            if chosen is None:
                return None  # its text is not in the log; do not take a neighbour's
        else:
            chosen = candidates[-1]
        self.rule_exceptions.remove(chosen)
        return chosen

    def _end_error_block(self) -> None:
        fields = self.block
        rule = self.block_rule
        jobid = _small_int(fields.get("jobid"))
        if jobid is None:
            self.warnings.append(f"error block of rule {rule} without a jobid skipped")
            return
        attempt = self._attempt_for(jobid)
        if attempt is None or attempt.status == "finished" or jobid in self.pending_restart:
            # no job block seen for it (log starts late, or an unprinted job): build one
            attempt = self._new_attempt(jobid, rule, fields, self.block_time)
        if not attempt.rule:
            attempt.rule = rule
        files = _split_files(fields.get("log", ""))
        slurm_log = attempt.slurm_log
        rule_logs = []
        for f in files:
            if slurm_log and (
                f == slurm_log
                or _looks_like_slurm_log(f, rule)
                and Path(f).name == Path(slurm_log).name
            ):
                continue
            if slurm_log is None and _looks_like_slurm_log(f, rule):
                slurm_log = f
                continue
            rule_logs.append(f)
        attempt.slurm_log = slurm_log
        if rule_logs or not attempt.log_files:
            attempt.log_files = rule_logs
        if not attempt.output and fields.get("output"):
            attempt.output = _split_files(fields["output"])
        shell = self.shell_text.text() if self.shell_text is not None else None
        if shell is not None:
            attempt.shell = shell.strip("\n")
        parts: list[str] = []
        exc = self._claim_exception(attempt.shell, self.attempt_line.get(jobid, 0))
        if exc is not None:
            parts.append(exc.text.text())
        message = fields.get("message", "None")
        if message and message != "None":
            parts.append(message)
            m = _SLURM_FAILED.search(message)
            if m:
                attempt.slurm_state = m.group(2)
                if attempt.slurm_job_id is None:
                    attempt.slurm_job_id = m.group(1)
        for key, value in fields.items():
            if key == "external_jobid" and attempt.slurm_job_id is None:
                attempt.slurm_job_id = value
        text = "\n".join(p for p in parts if p)
        if attempt.status == "failed" and attempt.message and text and text not in attempt.message:
            attempt.message = f"{attempt.message}\n{text}"
        elif text:
            attempt.message = text
        attempt.status = "failed"
        attempt.ended_at = self.block_time or self.now
        code = exit_code_from_text(attempt.message)
        if code is not None:
            attempt.exit_code = code
        self.last_error_attempt = attempt

    def _end_exception(self) -> None:
        exc = self.exc
        self.exc = None
        if exc is None:
            return
        text = exc.text.text()
        m = _MISSING_OUTPUT_JOB.search(text)
        if m:
            # a MissingOutputException is the job's only failure record (no error block)
            jobid = int(m.group(1))
            rule_m = _MISSING_OUTPUT_RULE.search(text)
            rule = rule_m.group(1) if rule_m else ""
            attempt = self._attempt_for(jobid)
            if attempt is None or attempt.status == "finished":
                attempt = self._new_attempt(jobid, rule, {}, exc.timestamp)
            if not attempt.rule:
                attempt.rule = rule
            attempt.message = f"{attempt.message}\n{text}" if attempt.message else text
            attempt.status = "failed"
            attempt.ended_at = exc.timestamp
            self.last_error_attempt = attempt
            self.last_event_terminal_error = False
            return
        first = exc.text.lines[0] if exc.text.lines else ""
        if first.startswith("RuleException"):
            self.rule_exceptions.append(exc)
            self.last_event_terminal_error = False
        elif first.startswith("Waiting at most"):
            self.last_event_terminal_error = False
        else:
            self.run_errors.append(text)
            self.last_event_terminal_error = True

    def _end_shown(self) -> None:
        if self.last_error_attempt is not None and self.shown_text is not None:
            self.last_error_attempt.shown_logs[self.shown_path] = self.shown_text.text()
        self.shown_text = None

    def close_block(self) -> None:
        mode = self.mode
        self.mode = "top"
        if mode == "job":
            self._end_job_block()
        elif mode in ("error", "shell"):
            self._end_error_block()
            self.shell_text = None
        elif mode == "exception":
            self._end_exception()
        elif mode == "shown":
            self._end_shown()
        self.block = {}

    # ------------------------------------------------------------------ lines
    def feed(self, line: str) -> None:
        mode = self.mode
        if mode == "job" or mode == "error":
            if line.startswith("    "):
                if mode == "error" and line == "    shell:":
                    self.mode = "shell"
                    self.shell_text = _Text()
                    return
                m = _FIELD.fullmatch(line)
                if m:
                    self.block[m.group(1)] = m.group(2)
                    return
            self.close_block()
        elif mode == "shell":
            if line == _SHELL_END:
                self.mode = "error"  # aux `key: value` lines may follow
                return
            if _is_structural(line):
                self.close_block()
            else:
                assert self.shell_text is not None
                self.shell_text.add(line[8:] if line.startswith("        ") else line)
                return
        elif mode == "exception":
            if not (
                _is_structural(line)
                or line.startswith("Logfile ")
                or self._starts_new_exception(line)
            ):
                assert self.exc is not None
                self.exc.text.add(line)
                return
            self.close_block()
        elif mode == "shown_header":
            if line and set(line) == {"="}:
                self.shown_sep = line
                self.mode = "shown"
                self.shown_text = _Text(MAX_SHOWN_CHARS)
                return
            self.mode = "top"
        elif mode == "shown":
            if line == self.shown_sep:
                self.close_block()
                return
            assert self.shown_text is not None
            self.shown_text.add(line)
            return
        self.top(line)

    def top(self, line: str) -> None:
        if not line:
            return
        c = line[0]
        if c == "[":
            when = _timestamp(line)
            if when is not None:
                self.now = when
                if self.first_time is None:
                    self.first_time = when
                return
        elif c == " ":
            m = _HEADER_FIELD.fullmatch(line)
            if m:
                self._header(m.group(1), m.group(2))
            return
        if line.startswith(("localrule ", "rule ", "localcheckpoint ", "checkpoint ")):
            m = _JOB_HEADER.fullmatch(line)
            if m:
                self.seen_marker = True
                self.mode = "job"
                self.block = {}
                self.block_rule = m.group(2)
                self.block_time = self.now
                self.block_line = self.lineno
                self.last_event_terminal_error = False
                return
        if line.startswith("Error in rule "):
            m = _ERROR_HEADER.fullmatch(line)
            if m:
                self.seen_marker = True
                self.mode = "error"
                self.block = {}
                self.block_rule = m.group(1)
                self.block_time = self.now
                self.shell_text = None
                self.last_event_terminal_error = False
                return
        if line.startswith("Finished jobid: "):
            m = _FINISHED.fullmatch(line)
            if m:
                self._finished(int(m.group(1)), m.group(2))
                return
        if line.startswith("Trying to restart job "):
            m = _RESTART.fullmatch(line)
            if m:
                jobid = int(m.group(1))
                self.restarts[jobid] = self.restarts.get(jobid, 0) + 1
                self.pending_restart.add(jobid)
                return
        if line.startswith("Job "):
            m = _SUBMITTED.fullmatch(line)
            if m:
                self._submitted(int(m.group(1)), m.group(2), m.group(3))
                return
            if _MISSING_OUTPUT_JOB.match(line) is None:
                m = _MESSAGE_JOB.fullmatch(line)
                if m:
                    # a rule with `message:`: no rule name, wildcards or resources printed
                    self.seen_marker = True
                    self.block_line = self.lineno
                    jobid = int(m.group(1))
                    current = self._attempt_for(jobid)
                    if (
                        current is None
                        or current.status != "running"
                        or jobid in self.pending_restart
                    ):
                        attempt = self._new_attempt(jobid, "", {}, self.now)
                        attempt.reason = m.group(2)
                    return
        if line.startswith("Submitted array job"):
            m = _ARRAY_SUBMITTED.fullmatch(line)
            if m:
                self.slurm = True
                ids = [int(x) for x in m.group(1).split(",") if x]
                first = int(m.group(3))
                for offset, jobid in enumerate(ids):
                    attempt = self._attempt_for(jobid)
                    if attempt is not None:
                        attempt.slurm_job_id = f"{m.group(2)}_{first + offset}"
                return
        if _PROGRESS.fullmatch(line):
            done, total, _ = _PROGRESS.fullmatch(line).groups()
            if done == total:
                self.end_marker = True
            return
        if line.startswith("Logfile ") and line.endswith(":"):
            self.mode = "shown_header"
            self.shown_path = line[len("Logfile ") : -1]
            if self.shown_path.endswith(": empty file"):
                self.mode = "top"
            return
        if line.startswith("Complete log(s):"):
            self.end_marker = True
            self.last_event_terminal_error = False
            return
        if line.startswith(("Nothing to be done", "Unlocked working directory")):
            self.seen_marker = True
            self.end_marker = True
            return
        if line.startswith("Exiting because a job execution failed"):
            self.exiting_failed = True
            return
        if line.startswith("Elapsed time:"):
            m = _ELAPSED.match(line)
            if m:
                days, h, mi, s = m.groups()
                self.elapsed = timedelta(
                    days=int(days or 0), hours=int(h), minutes=int(mi), seconds=float(s)
                )
            return
        if (
            line == "RuleException:"
            or line.startswith("Waiting at most")
            or _EXCEPTION_START.match(line)
        ):
            self.mode = "exception"
            self.exc = _Exception(text=_Text(), timestamp=self.now, lineno=self.lineno)
            self.exc.text.add(line)
            return
        if not self.seen_marker and line.startswith(_MARKERS):
            self.seen_marker = True

    def _header(self, key: str, value: str) -> None:
        if key == "Snakemake version":
            self.version = value.strip()
            self.seen_marker = True
        elif key == "Date":
            try:
                self.header_date = datetime.strptime(
                    value.strip(), "%Y-%m-%d %H:%M:%S"
                ).astimezone()
            except (ValueError, OverflowError, OSError):
                pass

    def _finished(self, jobid: int, rule: str) -> None:
        self.seen_marker = True
        self.jobs_finished += 1
        attempt = self._attempt_for(jobid)
        # wildcards are known from a job block (not from `Job N: <message>`, nor without one)
        seen_block = attempt is not None and bool(attempt.rule)
        if attempt is None:
            attempt = self._new_attempt(jobid, rule, {}, None)
        attempt.status = "finished"
        attempt.ended_at = self.now
        if not attempt.rule:
            attempt.rule = rule
        if seen_block:  # without its job block the wildcards are unknown
            self.succeeded.append(
                SucceededJob(jobid, attempt.rule, attempt.wildcards, attempt.ended_at)
            )
        self.pending_restart.discard(jobid)
        if len(self.jobs[jobid]) == 1:
            # succeeded at once: nothing to report, keep memory flat on huge logs
            del self.jobs[jobid]
            self.attempt_line.pop(jobid, None)

    def _submitted(self, jobid: int, slurm_id: str, log: str) -> None:
        self.slurm = True
        self.seen_marker = True
        attempt = self._attempt_for(jobid)
        if attempt is None:
            attempt = self._new_attempt(jobid, "", {}, self.now)
        attempt.slurm_job_id = slurm_id
        attempt.slurm_log = log.strip()

    # ------------------------------------------------------------------ result
    def result(self, complete_lines: bool) -> RunLog:
        self.close_block()
        failed_jobs: list[FailedJob] = []
        recovered: list[RecoveredJob] = []
        unfinished: list[JobAttempt] = []
        for jobid, attempts in self.jobs.items():
            last = attempts[-1]
            failures = [a for a in attempts if a.status == "failed"]
            if jobid in self.pending_restart or last.status == "running":
                unfinished.append(last)
            elif last.status == "failed":
                failed_jobs.append(self._failed_job(jobid, attempts))
            elif failures:
                recovered.append(
                    RecoveredJob(
                        jobid=jobid,
                        rule=last.rule,
                        wildcards=last.wildcards or _first_wildcards(attempts),
                        attempts=max(len(attempts), 1 + self.restarts.get(jobid, 0)),
                        resources=last.resources,
                        failures=failures,
                        finished_at=last.ended_at,
                    )
                )
        workflow_errors = list(self.run_errors)
        complete = self.end_marker or (self.last_event_terminal_error and complete_lines)
        started = _run_id_time(self.run_id) or self.header_date or self.first_time
        finished = None
        if complete:
            finished = self.now or started
            if started is not None and self.elapsed is not None:
                try:
                    finished = started + self.elapsed
                except OverflowError:
                    pass
        warnings = list(self.warnings)
        if not complete and (self.jobs or self.seen_marker and self.version):
            warnings.append("the log ends before the run did (killed, truncated or still running)")
        if unfinished and complete:
            warnings.append(f"{len(unfinished)} job(s) neither finished nor failed in this log")
        if self.version and not self.version.startswith("9."):
            warnings.append(f"written by Snakemake {self.version}; this parser knows 9.x")
        failed = bool(failed_jobs) or self.exiting_failed or bool(workflow_errors)
        failed_jobs.sort(key=lambda j: (j.failed_at is None, j.failed_at or datetime.min, j.jobid))
        return RunLog(
            path=str(self.path),
            run_id=self.run_id,
            started_at=started,
            finished_at=finished,
            complete=complete,
            failed=failed,
            jobs_finished=self.jobs_finished,
            failed_jobs=failed_jobs,
            warnings=warnings,
            recovered=recovered,
            unfinished=unfinished,
            errors=workflow_errors,
            snakemake_version=self.version,
            executor="slurm" if self.slurm else "local",
            succeeded=self.succeeded,
        )

    def _failed_job(self, jobid: int, attempts: list[JobAttempt]) -> FailedJob:
        last = attempts[-1]
        message = (
            last.message
            or f"Error in rule {last.rule} (jobid {jobid}): no error text in the main log"
        )
        return FailedJob(
            log_path=str(self.path),
            run_id=self.run_id,
            jobid=jobid,
            rule=last.rule,
            wildcards=last.wildcards or _first_wildcards(attempts),
            attempts=max(len(attempts), 1 + self.restarts.get(jobid, 0)),
            resources=last.resources,
            output=last.output,
            log_files=last.log_files,
            message=message,
            exit_code=last.exit_code,
            slurm_job_ids=[a.slurm_job_id for a in attempts if a.slurm_job_id],
            slurm_log=last.slurm_log,
            slurm_state=last.slurm_state,
            shell=last.shell,
            failed_at=last.ended_at,
            attempt_details=attempts,
            shown_logs=last.shown_logs,
        )


def _first_wildcards(attempts: list[JobAttempt]) -> dict[str, str]:
    for a in reversed(attempts):
        if a.wildcards:
            return a.wildcards
    return {}


def _looks_like_slurm_log(path: str, rule: str) -> bool:
    """`<logdir>/rule_<rule>/<wildcards>/<slurm id>.log` (the plugin's layout)."""
    p = Path(path)
    return bool(re.fullmatch(r"\d+(_\d+)?\.log", p.name)) and any(
        part in (f"rule_{rule}", f"group_{rule}") or part.startswith("group_") for part in p.parts
    )


def _run_id_time(run_id: str) -> datetime | None:
    m = _RUN_ID_STAMP.fullmatch(run_id)
    if not m:
        return None
    try:
        return datetime.strptime(
            m.group(1), "%Y-%m-%dT%H%M%S.%f" if "." in run_id else "%Y-%m-%dT%H%M%S"
        ).astimezone()
    except (ValueError, OverflowError, OSError):
        return None


# ---------------------------------------------------------------------------- public API


def parse_log(path: str | Path) -> RunLog:
    """Parse one Snakemake main log. Raises LogFormatError for anything that is not one.

    Empty and near-empty logs (`--unlock`, `--summary`, `Nothing to be done`) are valid
    RunLogs without jobs. A log cut short (Snakemake killed, disk full) is parsed up to the
    last complete line and comes back with `complete=False`. Invalid UTF-8 is replaced if
    the text is still recognisably a Snakemake log; NUL bytes mean a binary file.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except IsADirectoryError as exc:
        raise LogFormatError(f"{path}: is a directory, not a Snakemake log") from exc
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    parser = _Parser(path)
    not_utf8 = 0
    lineno = 0
    complete_lines = True
    try:
        with handle:
            while True:
                raw = handle.readline(MAX_LINE_BYTES)
                if not raw:
                    break
                lineno += 1
                if b"\x00" in raw:
                    raise LogFormatError(
                        f"{path}: binary file (NUL byte on line {lineno}), not a Snakemake log"
                    )
                if not raw.endswith(b"\n"):
                    if len(raw) >= MAX_LINE_BYTES:
                        parser.warnings.append(
                            f"line {lineno} is longer than {MAX_LINE_BYTES} bytes and was split"
                        )
                    else:
                        # the last line is cut: a kill mid-write; never trust half a line
                        complete_lines = False
                        parser.warnings.append(
                            f"the last line ({lineno}) is incomplete and was ignored"
                        )
                        break
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    not_utf8 += 1
                    line = raw.decode("utf-8", errors="replace")
                line = line.rstrip("\r\n")
                parser.lineno = lineno
                parser.feed(line)
                if lineno == SNIFF_LINES and not parser.seen_marker:
                    raise LogFormatError(_unknown_format(path, not_utf8))
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    except (ValueError, OverflowError, LookupError, RecursionError, MemoryError) as exc:
        # a bug or a format this parser does not know: still a clean error, with the line
        raise LogFormatError(
            f"{path}: cannot parse line {lineno}: {type(exc).__name__}: {exc}"
        ) from exc
    if lineno and not parser.seen_marker:
        raise LogFormatError(_unknown_format(path, not_utf8))
    try:
        run = parser.result(complete_lines)
    except (ValueError, OverflowError, LookupError) as exc:
        raise LogFormatError(f"{path}: cannot parse: {type(exc).__name__}: {exc}") from exc
    if not_utf8:
        run.warnings.append(
            f"{not_utf8} line(s) are not valid UTF-8; undecodable bytes were replaced"
        )
    return run


def _unknown_format(path: Path, not_utf8: int) -> str:
    if not_utf8:
        return f"{path}: not UTF-8 text and not a Snakemake main log"
    return f"{path}: does not look like a Snakemake main log (no Snakemake line in it)"


def _resolve(path: str, workdir: Path) -> Path:
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


def _tail(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(text, note): the last max_bytes of a file, or None and why not."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return None, "absent"
    except IsADirectoryError:
        return None, "a directory"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or type(exc).__name__}"
    text = data.replace(b"\x00", b"").decode("utf-8", errors="replace")
    if start > 0:
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else text
        return text, f"last {max_bytes} of {size} bytes"
    return text, ""


def _tail_text(text: str, max_bytes: int) -> str:
    if len(text) <= max_bytes:
        return text
    cut = text[-max_bytes:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if newline >= 0 else cut


def read_evidence(job: FailedJob, workdir: str | Path, max_bytes: int = EVIDENCE_MAX_BYTES) -> str:
    """The text to classify a failed job by, most specific last.

    1. the main log's error text (RuleException / CalledProcessError / SLURM message);
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
        _tail_text(job.message, max_bytes),
    ]
    for name in job.log_files:
        shown = job.shown_logs.get(name)
        if shown is not None:
            sections += [
                f"--- rule log {name} (as shown in the main log)",
                _tail_text(shown, max_bytes),
            ]
            continue
        text, note = _tail(_resolve(name, workdir), max_bytes)
        sections.append(f"--- rule log {name}" + (f" ({note})" if note else ""))
        if text is not None:
            sections.append(text)
    if job.slurm_log:
        text, note = _tail(_resolve(job.slurm_log, workdir), max_bytes)
        if text is None and job.slurm_log in job.shown_logs:
            text, note = (
                _tail_text(job.shown_logs[job.slurm_log], max_bytes),
                "as shown in the main log",
            )
        sections.append(f"--- SLURM log {job.slurm_log}" + (f" ({note})" if note else ""))
        if text is not None:
            sections.append(text)
    return "\n".join(s.rstrip("\n") for s in sections) + "\n"


def slurm_exit_code(
    job: FailedJob, workdir: str | Path, max_bytes: int = EVIDENCE_MAX_BYTES
) -> int | None:
    """The exit code in the last attempt's SLURM log (None when absent or not stated)."""
    if not job.slurm_log:
        return None
    text, _ = _tail(_resolve(job.slurm_log, Path(workdir)), max_bytes)
    return exit_code_from_text(text) if text else None
