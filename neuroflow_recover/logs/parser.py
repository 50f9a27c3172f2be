"""Parse a Snakemake 9 main log (local or SLURM run) into a RunLog, line by line.

`parse_log(path) -> RunLog`: every job that failed for good in the invocation, the jobs that
failed and then succeeded on a retry, the jobs still running when the log ends, every job
that finished, and the run's own errors. A 100 MB log is never held in memory. What the
parser relies on, and what it does not handle (group jobs): docs/snakemake-notes.md and
docs/architecture.md, "Main logs".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..errors import LogFormatError
from .lines import (
    ARRAY_SUBMITTED,
    ELAPSED,
    ERROR_HEADER,
    EXCEPTION_START,
    FIELD,
    FINISHED,
    HEADER_FIELD,
    JOB_HEADER,
    JOB_HEADER_PREFIXES,
    MARKERS,
    MESSAGE_JOB,
    MISSING_OUTPUT_JOB,
    MISSING_OUTPUT_RULE,
    PROGRESS,
    RESTART,
    SHELL_END,
    SLURM_FAILED,
    SUBMITTED,
    exit_code_from_text,
    is_structural,
    parse_timestamp,
    run_id_time,
    small_int,
    split_assignments,
    split_files,
)
from .locations import run_id_of
from .records import FailedJob, JobAttempt, RecoveredJob, RunLog, SucceededJob
from .slurm import looks_like_slurm_log

MAX_LINE_BYTES = 1 << 20  # longer lines are split (a binary blob without newlines)
MAX_TEXT_CHARS = 64 * 1024  # error text kept per exception / shell command
MAX_SHOWN_CHARS = 256 * 1024  # --show-failed-logs copy kept per log file
SNIFF_LINES = 200  # a log without any Snakemake line among its first lines is rejected

# The lines outside any block, in the order they are tried: (prefix, pattern the whole line
# must match or None, handler method). A handler returning False passes the line on.
_TOP_LINES = (
    ("[", None, "_on_timestamp"),
    (" ", None, "_on_indented"),
    (JOB_HEADER_PREFIXES, JOB_HEADER, "_on_job_header"),
    ("Error in rule ", ERROR_HEADER, "_on_error_header"),
    ("Finished jobid: ", FINISHED, "_on_finished"),
    ("Trying to restart job ", RESTART, "_on_restart"),
    ("Job ", SUBMITTED, "_on_submitted"),
    ("Job ", MESSAGE_JOB, "_on_message_job"),
    ("Submitted array job", ARRAY_SUBMITTED, "_on_array_submitted"),
    ("", PROGRESS, "_on_progress"),
    ("Logfile ", None, "_on_logfile"),
    ("Complete log(s):", None, "_on_complete"),
    (("Nothing to be done", "Unlocked working directory"), None, "_on_nothing_to_do"),
    ("Exiting because a job execution failed", None, "_on_exiting"),
    ("Elapsed time:", None, "_on_elapsed"),
)


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
        self.run_id = run_id_of(path)
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
        self.command: str | None = None  # the header's `Command:` (Snakemake's arguments)
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
        self.modes = {
            "job": self._in_block,
            "error": self._in_block,
            "shell": self._in_shell,
            "exception": self._in_exception,
            "shown_header": self._in_shown_header,
            "shown": self._in_shown,
        }
        self.top_lines = [(prefix, pattern, getattr(self, name)) for prefix, pattern, name in _TOP_LINES]

    # ------------------------------------------------------------------ blocks
    def _attempt_for(self, jobid: int) -> JobAttempt | None:
        attempts = self.jobs.get(jobid)
        return attempts[-1] if attempts else None

    def _new_attempt(self, jobid: int, rule: str, fields: dict[str, str], when) -> JobAttempt:
        previous = self.jobs.setdefault(jobid, [])
        attempt = JobAttempt(
            jobid=jobid,
            rule=rule,
            wildcards=split_assignments(fields.get("wildcards", "")),
            resources=split_assignments(fields.get("resources", "")),
            output=split_files(fields.get("output", "")),
            log_files=split_files(fields.get("log", "")),
            started_at=when,
            attempt=len(previous) + 1,
            input=split_files(fields.get("input", "")),
            benchmark=fields.get("benchmark") or None,
            reason=fields.get("reason"),
        )
        attempt.threads = small_int(fields.get("threads"))
        previous.append(attempt)
        self.pending_restart.discard(jobid)
        self.attempt_line[jobid] = self.block_line  # where the attempt's job block starts
        return attempt

    def _end_job_block(self) -> None:
        fields = self.block
        jobid = small_int(fields.get("jobid"))
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
                current.wildcards = split_assignments(fields.get("wildcards", ""))
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
        jobid = small_int(fields.get("jobid"))
        if jobid is None:
            self.warnings.append(f"error block of rule {rule} without a jobid skipped")
            return
        attempt = self._attempt_for(jobid)
        if attempt is None or attempt.status == "finished" or jobid in self.pending_restart:
            # no job block seen for it (log starts late, or an unprinted job): build one
            attempt = self._new_attempt(jobid, rule, fields, self.block_time)
        if not attempt.rule:
            attempt.rule = rule
        rule_logs, attempt.slurm_log = _split_logs(fields, rule, attempt.slurm_log)
        if rule_logs or not attempt.log_files:
            attempt.log_files = rule_logs
        if not attempt.output and fields.get("output"):
            attempt.output = split_files(fields["output"])
        shell = self.shell_text.text() if self.shell_text is not None else None
        if shell is not None:
            attempt.shell = shell.strip("\n")
        parts = self._error_texts(attempt, fields, jobid)
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

    def _error_texts(self, attempt: JobAttempt, fields: dict[str, str], jobid: int) -> list[str]:
        """The error block's texts: its exception (printed before it) and its `message:`
        (SLURM's failure line: the job's SLURM state and id)."""
        parts: list[str] = []
        exc = self._claim_exception(attempt.shell, self.attempt_line.get(jobid, 0))
        if exc is not None:
            parts.append(exc.text.text())
        message = fields.get("message", "None")
        if message and message != "None":
            parts.append(message)
            m = SLURM_FAILED.search(message)
            if m:
                attempt.slurm_state = m.group(2)
                if attempt.slurm_job_id is None:
                    attempt.slurm_job_id = m.group(1)
        if attempt.slurm_job_id is None and "external_jobid" in fields:
            attempt.slurm_job_id = fields["external_jobid"]
        return parts

    def _end_exception(self) -> None:
        exc = self.exc
        self.exc = None
        if exc is None:
            return
        text = exc.text.text()
        m = MISSING_OUTPUT_JOB.search(text)
        if m:
            # a MissingOutputException is the job's only failure record (no error block)
            jobid = int(m.group(1))
            rule_m = MISSING_OUTPUT_RULE.search(text)
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
        """One line: the open block's mode consumes it, or it is a line of its own."""
        consume = self.modes.get(self.mode)
        if consume is None or not consume(line):
            self.top(line)

    def _in_block(self, line: str) -> bool:
        """`    key: value` lines of a job or error block (`    shell:` starts the command)."""
        if line.startswith("    "):
            if self.mode == "error" and line == "    shell:":
                self.mode = "shell"
                self.shell_text = _Text()
                return True
            m = FIELD.fullmatch(line)
            if m:
                self.block[m.group(1)] = m.group(2)
                return True
        self.close_block()
        return False

    def _in_shell(self, line: str) -> bool:
        if line == SHELL_END:
            self.mode = "error"  # aux `key: value` lines may follow
            return True
        if is_structural(line):
            self.close_block()
            return False
        assert self.shell_text is not None
        self.shell_text.add(line[8:] if line.startswith("        ") else line)
        return True

    def _in_exception(self, line: str) -> bool:
        if is_structural(line) or line.startswith("Logfile ") or self._starts_new_exception(line):
            self.close_block()
            return False
        assert self.exc is not None
        self.exc.text.add(line)
        return True

    def _in_shown_header(self, line: str) -> bool:
        if line and set(line) == {"="}:
            self.shown_sep = line
            self.mode = "shown"
            self.shown_text = _Text(MAX_SHOWN_CHARS)
            return True
        self.mode = "top"
        return False

    def _in_shown(self, line: str) -> bool:
        if line == self.shown_sep:
            self.close_block()
            return True
        assert self.shown_text is not None
        self.shown_text.add(line)
        return True

    def top(self, line: str) -> None:
        """A line outside any block: the first (prefix, pattern, handler) of `_TOP_LINES`
        whose prefix starts the line and whose pattern matches the whole line handles it
        (a handler returning False passes it on); else an exception's first line, or text."""
        if not line:
            return
        for prefix, pattern, handler in self.top_lines:
            if not line.startswith(prefix):
                continue
            m = pattern.fullmatch(line) if pattern is not None else None
            if (pattern is None or m) and handler(line, m) is not False:
                return
        if line == "RuleException:" or line.startswith("Waiting at most") or EXCEPTION_START.match(line):
            self.mode = "exception"
            self.exc = _Exception(text=_Text(), timestamp=self.now, lineno=self.lineno)
            self.exc.text.add(line)
            return
        if not self.seen_marker and line.startswith(MARKERS):
            self.seen_marker = True

    def _on_timestamp(self, line: str, _m) -> bool:
        when = parse_timestamp(line)
        if when is None:
            return False
        self.now = when
        if self.first_time is None:
            self.first_time = when
        return True

    def _on_indented(self, line: str, _m) -> None:
        m = HEADER_FIELD.fullmatch(line)
        if m:
            self._header(m.group(1), m.group(2))

    def _on_job_header(self, _line: str, m) -> None:
        self._open_block("job", m.group(2))

    def _on_error_header(self, _line: str, m) -> None:
        self._open_block("error", m.group(1))
        self.shell_text = None

    def _open_block(self, mode: str, rule: str) -> None:
        self.seen_marker = True
        self.mode = mode
        self.block = {}
        self.block_rule = rule
        self.block_time = self.now
        if mode == "job":
            self.block_line = self.lineno
        self.last_event_terminal_error = False

    def _on_finished(self, _line: str, m) -> None:
        self._finished(int(m.group(1)), m.group(2))

    def _on_restart(self, _line: str, m) -> None:
        jobid = int(m.group(1))
        self.restarts[jobid] = self.restarts.get(jobid, 0) + 1
        self.pending_restart.add(jobid)

    def _on_submitted(self, _line: str, m) -> None:
        self._submitted(int(m.group(1)), m.group(2), m.group(3))

    def _on_message_job(self, line: str, m) -> bool:
        """`Job N: <message>`: a rule with `message:` prints no rule, wildcards or resources."""
        if MISSING_OUTPUT_JOB.match(line) is not None:
            return False
        self.seen_marker = True
        self.block_line = self.lineno
        jobid = int(m.group(1))
        current = self._attempt_for(jobid)
        if current is None or current.status != "running" or jobid in self.pending_restart:
            attempt = self._new_attempt(jobid, "", {}, self.now)
            attempt.reason = m.group(2)
        return True

    def _on_array_submitted(self, _line: str, m) -> None:
        self.slurm = True
        ids = [int(x) for x in m.group(1).split(",") if x]
        first = int(m.group(3))
        for offset, jobid in enumerate(ids):
            attempt = self._attempt_for(jobid)
            if attempt is not None:
                attempt.slurm_job_id = f"{m.group(2)}_{first + offset}"

    def _on_progress(self, _line: str, m) -> None:
        done, total, _ = m.groups()
        if done == total:
            self.end_marker = True

    def _on_logfile(self, line: str, _m) -> bool:
        """`Logfile PATH:` then the file between `====` lines (--show-failed-logs)."""
        if not line.endswith(":"):
            return False
        self.mode = "shown_header"
        self.shown_path = line[len("Logfile ") : -1]
        if self.shown_path.endswith(": empty file"):
            self.mode = "top"
        return True

    def _on_complete(self, _line: str, _m) -> None:
        self.end_marker = True
        self.last_event_terminal_error = False

    def _on_nothing_to_do(self, _line: str, _m) -> None:
        self.seen_marker = True
        self.end_marker = True

    def _on_exiting(self, _line: str, _m) -> None:
        self.exiting_failed = True

    def _on_elapsed(self, line: str, _m) -> None:
        m = ELAPSED.match(line)
        if m:
            days, h, mi, s = m.groups()
            self.elapsed = timedelta(
                days=int(days or 0), hours=int(h), minutes=int(mi), seconds=float(s)
            )

    def _header(self, key: str, value: str) -> None:
        if key == "Snakemake version":
            self.version = value.strip()
            self.seen_marker = True
        elif key == "Command":
            self.command = value.strip()
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
        failed_jobs, recovered, unfinished = self._outcomes()
        workflow_errors = list(self.run_errors)
        complete = self.end_marker or (self.last_event_terminal_error and complete_lines)
        started = run_id_time(self.run_id) or self.header_date or self.first_time
        failed_jobs.sort(key=lambda j: (j.failed_at is None, j.failed_at or datetime.min, j.jobid))
        return RunLog(
            path=str(self.path),
            run_id=self.run_id,
            started_at=started,
            finished_at=self._finished_at(started) if complete else None,
            complete=complete,
            failed=bool(failed_jobs) or self.exiting_failed or bool(workflow_errors),
            jobs_finished=self.jobs_finished,
            failed_jobs=failed_jobs,
            warnings=self._final_warnings(complete, unfinished),
            recovered=recovered,
            unfinished=unfinished,
            errors=workflow_errors,
            snakemake_version=self.version,
            command=self.command,
            executor="slurm" if self.slurm else "local",
            succeeded=self.succeeded,
        )

    def _outcomes(self) -> tuple[list[FailedJob], list[RecoveredJob], list[JobAttempt]]:
        """Every job's outcome: failed for good, recovered by a retry, or unfinished."""
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
        return failed_jobs, recovered, unfinished

    def _finished_at(self, started: datetime | None) -> datetime | None:
        finished = self.now or started
        if started is not None and self.elapsed is not None:
            try:
                finished = started + self.elapsed
            except OverflowError:
                pass
        return finished

    def _final_warnings(self, complete: bool, unfinished: list[JobAttempt]) -> list[str]:
        warnings = list(self.warnings)
        if not complete and (self.jobs or self.seen_marker and self.version):
            warnings.append("the log ends before the run did (killed, truncated or still running)")
        if unfinished and complete:
            warnings.append(f"{len(unfinished)} job(s) neither finished nor failed in this log")
        if self.version and not self.version.startswith("9."):
            warnings.append(f"written by Snakemake {self.version}; this parser knows 9.x")
        return warnings

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


def _split_logs(
    fields: dict[str, str], rule: str, slurm_log: str | None
) -> tuple[list[str], str | None]:
    """(rule logs, SLURM log) of an error block's `log:` (the plugin appends its log)."""
    rule_logs = []
    for f in split_files(fields.get("log", "")):
        if slurm_log and (
            f == slurm_log
            or looks_like_slurm_log(f, rule)
            and Path(f).name == Path(slurm_log).name
        ):
            continue
        if slurm_log is None and looks_like_slurm_log(f, rule):
            slurm_log = f
            continue
        rule_logs.append(f)
    return rule_logs, slurm_log


def _first_wildcards(attempts: list[JobAttempt]) -> dict[str, str]:
    for a in reversed(attempts):
        if a.wildcards:
            return a.wildcards
    return {}


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
    lines = _Lines(path, parser.warnings)
    try:
        with handle:
            for line in lines.read(handle):
                parser.lineno = lines.lineno
                parser.feed(line)
                if lines.lineno == SNIFF_LINES and not parser.seen_marker:
                    raise LogFormatError(_unknown_format(path, lines.not_utf8))
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    except (ValueError, OverflowError, LookupError, RecursionError, MemoryError) as exc:
        # a bug or a format this parser does not know: still a clean error, with the line
        raise LogFormatError(
            f"{path}: cannot parse line {lines.lineno}: {type(exc).__name__}: {exc}"
        ) from exc
    if lines.lineno and not parser.seen_marker:
        raise LogFormatError(_unknown_format(path, lines.not_utf8))
    try:
        run = parser.result(lines.complete)
    except (ValueError, OverflowError, LookupError) as exc:
        raise LogFormatError(f"{path}: cannot parse: {type(exc).__name__}: {exc}") from exc
    if lines.not_utf8:
        run.warnings.append(
            f"{lines.not_utf8} line(s) are not valid UTF-8; undecodable bytes were replaced"
        )
    return run


class _Lines:
    """The lines of a log file, decoded; counts them and notes what was odd about them."""

    def __init__(self, path: Path, warnings: list[str]):
        self.path = path
        self.warnings = warnings
        self.lineno = 0
        self.not_utf8 = 0
        self.complete = True  # False: the last line was cut (a kill mid-write)

    def read(self, handle):
        while raw := handle.readline(MAX_LINE_BYTES):
            self.lineno += 1
            if b"\x00" in raw:
                raise LogFormatError(
                    f"{self.path}: binary file (NUL byte on line {self.lineno}), "
                    "not a Snakemake log"
                )
            if not raw.endswith(b"\n"):
                if len(raw) < MAX_LINE_BYTES:  # never trust half a line
                    self.complete = False
                    self.warnings.append(
                        f"the last line ({self.lineno}) is incomplete and was ignored"
                    )
                    return
                self.warnings.append(
                    f"line {self.lineno} is longer than {MAX_LINE_BYTES} bytes and was split"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8 += 1
                line = raw.decode("utf-8", errors="replace")
            yield line.rstrip("\r\n")


def _unknown_format(path: Path, not_utf8: int) -> str:
    if not_utf8:
        return f"{path}: not UTF-8 text and not a Snakemake main log"
    return f"{path}: does not look like a Snakemake main log (no Snakemake line in it)"
