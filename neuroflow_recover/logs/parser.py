"""Parse a Snakemake 8.x / 9.x main log or console output (local or SLURM) into a RunLog.

`parse_log(path) -> RunLog`: every job that failed for good in the invocation, the jobs that
failed and then succeeded on a retry, the jobs still running when the log ends, every job
that finished, the run's own errors, and the failure lines no job could be built from
(`not_understood`). A 100 MB log is never held in memory. What the parser relies on, the
differences between 8.x and 9.x, and what it cannot know: docs/snakemake-notes.md and
docs/architecture.md, "Main logs".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
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
    FINISHED_8,
    GROUP_ERROR,
    GROUP_MESSAGE,
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
    SUBMIT_FAILED,
    SUBMITTED,
    TIMESTAMP,
    TOOL_ERROR,
    exit_code_from_text,
    is_cut,
    is_structural,
    parse_timestamp,
    run_id_time,
    small_int,
    split_assignments,
    split_files,
)
from .locations import run_id_of
from .printed import MAX_TEXT_CHARS, BoundedText, PrintedLines, is_snakemake_info
from .reading import SNIFF_LINES, LogLines, unknown_format
from .records import FailedJob, JobAttempt, NotUnderstood, RecoveredJob, RunLog, SucceededJob
from .slurm import looks_like_slurm_log

MAX_SHOWN_CHARS = 256 * 1024  # --show-failed-logs copy kept per log file
MIN_CUT_MATCH = 20  # characters a cut command must still show to be matched
MAX_NOT_UNDERSTOOD = 1000
MAX_SHOWN_LINE = 160  # characters of a not-understood line that are listed  # listed per log (the count of the rest is a warning)
# keys of job and error blocks: after a multi-line `message:` any other `key:` continues it
BLOCK_KEYS = frozenset(
    "message jobid input output log conda-env container-img shell external_jobid benchmark"
    " reason wildcards resources threads priority".split()
)

# The lines outside any block, in the order they are tried: (prefix, pattern the whole line
# must match or None, handler method). A handler returning False passes the line on.
_TOP_LINES = (
    ("[", None, "_on_timestamp"),
    ((" ", "\t"), None, "_on_indented"),
    (JOB_HEADER_PREFIXES, JOB_HEADER, "_on_job_header"),
    ("Error in rule", None, "_on_error_header"),
    ("Error in group ", GROUP_ERROR, "_on_group_error"),
    ("Finished jobid: ", FINISHED, "_on_finished"),
    ("Finished job ", FINISHED_8, "_on_finished_8"),
    ("Trying to restart job ", RESTART, "_on_restart"),
    ("Job ", SUBMITTED, "_on_submitted"),
    ("Job ", MESSAGE_JOB, "_on_message_job"),
    ("Submitted array job", ARRAY_SUBMITTED, "_on_array_submitted"),
    ("SLURM-job ", None, "_on_slurm_failed"),
    ("", PROGRESS, "_on_progress"),
    ("Logfile ", None, "_on_logfile"),
    (("Complete log(s):", "Complete log:"), None, "_on_complete"),
    (("Nothing to be done", "Unlocked working directory"), None, "_on_nothing_to_do"),
    ("Exiting because a job execution failed", None, "_on_exiting"),
    ("Elapsed time:", None, "_on_elapsed"),
    ("Removing output files of failed job", None, "_on_removing"),
    (("Job stats:", "Job counts:"), None, "_on_stats"),
)


@dataclass
class _Exception:
    """An exception text seen in the log, not yet attributed to a job."""

    text: BoundedText
    timestamp: datetime | None
    lineno: int = 0
    printed: list = field(default_factory=list)  # the lines just before it (the tool's stderr)


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
        self.rule_exceptions: deque[_Exception] = deque()
        self.printed = PrintedLines()
        self.running: set[int] = set()  # jobids whose current attempt is running
        self.not_understood: list[NotUnderstood] = []
        self.not_understood_dropped = 0
        self.restart_lines: list[tuple[int, int]] = []  # (line, jobid)
        self.slurm_failed_lines: list[tuple[int, str, str]] = []  # (line, text, SLURM id)
        self.group_jobs: list[list] = []  # [rule, jobid, output] of the failed group's jobs
        self.synthetic_jobid = 0  # error blocks without `jobid:` get -1, -2, ...
        # the run's own exceptions (LockException, ...); the last ones if there are many
        self.run_errors: deque[str] = deque(maxlen=100)
        self.now: datetime | None = None  # last timestamp line
        self.lineno = 0
        self.attempt_line: dict[int, int] = {}  # jobid -> line of its current attempt's block
        self.first_time: datetime | None = None
        self.header_date: datetime | None = None
        self.version: str | None = None
        self.command: str | None = None  # the run's command line (9.x header)
        self.workflow_id: str | None = None  # the run's UUID (9.x header)
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
        self.error_line = (0, "")  # (line, text) of the open error block's header
        self.last_key = ""  # the block's last `key:` (multi-line values continue it)
        self.skip_next = False  # the file line after "Removing output files of failed job"
        self.in_stats = False  # inside the job-stats table
        self.shell_text: BoundedText | None = None
        self.exc: _Exception | None = None
        self.shown_path = ""
        self.shown_sep = ""
        self.shown_text: BoundedText | None = None
        self.last_error_attempt: JobAttempt | None = None  # where --show-failed-logs copies go
        self.modes = {
            "job": self._in_block,
            "error": self._in_block,
            "group": self._in_group,
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
        self.running.add(jobid)
        self.pending_restart.discard(jobid)
        self.attempt_line[jobid] = self.block_line  # where the attempt's job block starts
        return attempt

    def _not_understood(self, line: int, text: str, why: str) -> None:
        if len(self.not_understood) < MAX_NOT_UNDERSTOOD:
            self.not_understood.append(NotUnderstood(line, _shortened(text.strip()), why))
        else:
            self.not_understood_dropped += 1

    def _end_job_block(self) -> None:
        fields = self.block
        jobid = small_int(fields.get("jobid"))
        if jobid is None:  # an excerpt: its error block is found by rule and output
            jobid = self._new_synthetic_jobid()
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
        if is_cut(first):
            first = first[:-1]
        if first:
            chosen = next((e for e in reversed(candidates) if _quotes(e.text, first)), None)
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
            jobid = self._jobid_of_block(rule, fields)
        attempt = self._attempt_for(jobid)
        if attempt is None or attempt.status == "finished" or jobid in self.pending_restart:
            # no job block seen for it (log starts late, or an unprinted job): build one
            if not rule:
                self._not_understood(*self.error_line, "an error block whose rule cannot be read")
                shell = self.shell_text.text() if self.shell_text is not None else None
                self._claim_exception(shell, 0)  # listed once, with the block
                return
            attempt = self._new_attempt(jobid, rule, fields, self.block_time)
        if not attempt.rule:
            attempt.rule = rule
        rule_logs, attempt.slurm_log = _split_logs(fields, attempt.rule, attempt.slurm_log)
        if rule_logs or not attempt.log_files:
            attempt.log_files = rule_logs
        if not attempt.output and fields.get("output"):
            attempt.output = split_files(fields["output"])
        shell = self.shell_text.text() if self.shell_text is not None else None
        if shell is not None:
            attempt.shell = shell.strip("\n")
        parts = self._error_texts(attempt, fields, jobid)
        self._fail(attempt, "\n".join(p for p in parts if p), self.block_time or self.now)
        attempt.line = self.error_line[0]

    def _fail(self, attempt: JobAttempt, text: str, when: datetime | None) -> None:
        """`attempt` failed with `text` (added to what an earlier report of it said)."""
        if attempt.status == "failed" and attempt.message and text and text not in attempt.message:
            attempt.message = f"{attempt.message}\n{text}"
        elif text:
            attempt.message = text
        attempt.status = "failed"
        attempt.ended_at = when
        attempt.line = self.lineno
        self.running.discard(attempt.jobid)
        code = exit_code_from_text(attempt.message)
        if code is not None:
            attempt.exit_code = code
        self.last_error_attempt = attempt

    def _jobid_of_block(self, rule: str, fields: dict[str, str]) -> int:
        """An error block without `jobid:`: the one running job of its rule (and outputs),
        else a job of its own (a negative id: distinct failures are never merged)."""
        outputs = split_files(fields.get("output", ""))
        running = [
            attempts[-1]
            for jobid, attempts in self.jobs.items()
            if attempts[-1].status == "running" and attempts[-1].rule == rule and rule
        ]
        if outputs:
            running = [a for a in running if a.output[:1] == outputs[:1]]
        if len(running) == 1:
            return running[0].jobid
        self.warnings.append(
            f"line {self.error_line[0]}: error block of rule {rule or '?'} without a jobid:"
            " kept as a job of its own"
        )
        return self._new_synthetic_jobid()

    def _new_synthetic_jobid(self) -> int:
        self.synthetic_jobid -= 1
        return self.synthetic_jobid

    def _error_texts(self, attempt: JobAttempt, fields: dict[str, str], jobid: int) -> list[str]:
        """The error block's texts: its exception (printed before it) and its `message:`
        (SLURM's failure line: the job's SLURM state and id; sbatch's refusal); the lines the
        job printed go to `attempt.printed`."""
        parts: list[str] = []
        exc = self._claim_exception(attempt.shell, self.attempt_line.get(jobid, 0))
        if exc is not None:
            parts.append(exc.text.text())
        # the lines just before its exception, else just before the error block
        before = exc.printed if exc is not None else self.printed.take()
        printed = self.printed.of_job(jobid, self.attempt_line.get(jobid, 0), before)
        if printed:
            attempt.printed = printed
        message = fields.get("message", "None")
        if message and message != "None":
            parts.append(message)
            m = SLURM_FAILED.search(message)
            if m:
                attempt.slurm_state = m.group(2)
                if attempt.slurm_job_id is None:
                    attempt.slurm_job_id = m.group(1)
            if SUBMIT_FAILED.search(message):
                attempt.submit_failed = True
        if attempt.slurm_job_id is None and "external_jobid" in fields:
            attempt.slurm_job_id = fields["external_jobid"]
        return parts

    def _end_exception(self) -> None:
        exc = self.exc
        self.exc = None
        if exc is None:
            return
        text = exc.text.text()
        self.last_event_terminal_error = False
        m = MISSING_OUTPUT_JOB.search(text)
        if m:
            # a MissingOutputException is the job's only failure record (no error block)
            rule_m = MISSING_OUTPUT_RULE.search(text)
            self._exception_fails(int(m.group(1)), rule_m.group(1) if rule_m else "", exc)
            return
        first = exc.text.lines[0] if exc.text.lines else ""
        if first.startswith("RuleException"):
            self.rule_exceptions.append(exc)
        elif first.startswith("Waiting at most"):
            pass
        elif SUBMIT_FAILED.search(text):
            self._submission_failed(exc)
        else:
            self.run_errors.append(text)
            self.last_event_terminal_error = True

    def _exception_fails(self, jobid: int, rule: str, exc: _Exception) -> JobAttempt:
        attempt = self._attempt_for(jobid)
        if attempt is None or attempt.status == "finished":
            attempt = self._new_attempt(jobid, rule, {}, exc.timestamp)
        if not attempt.rule:
            attempt.rule = rule
        printed = self.printed.of_job(jobid, self.attempt_line.get(jobid, 0), exc.printed)
        if printed:
            attempt.printed = printed
        self._fail(attempt, exc.text.text(), exc.timestamp)
        attempt.line = exc.lineno
        return attempt

    def _submission_failed(self, exc: _Exception) -> None:
        """sbatch refused a job and the SLURM plugin (1.x) ended the run with a WorkflowError:
        the job is the last one whose job block got no submission line."""
        waiting = [
            attempts[-1]
            for attempts in self.jobs.values()
            if attempts[-1].status == "running" and not attempts[-1].slurm_job_id
        ]
        if not waiting:
            self.run_errors.append(exc.text.text())
            self.last_event_terminal_error = True
            self._not_understood(
                exc.lineno, exc.text.text().splitlines()[-1],
                "sbatch refused a job, but no job block without a submission line precedes it",
            )  # fmt: skip
            return
        last = max(waiting, key=lambda a: self.attempt_line.get(a.jobid, 0))
        self._exception_fails(last.jobid, last.rule, exc).submit_failed = True
        self.last_event_terminal_error = True  # the run ended with it

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
        elif mode == "group":
            self._end_group()
        self.block = {}
        self.last_key = ""

    # ------------------------------------------------------------------ lines
    def feed(self, line: str) -> None:
        """One line: the open block's mode consumes it, or it is a line of its own."""
        consume = self.modes.get(self.mode)
        if consume is None or not consume(line):
            self.top(line)

    def _in_block(self, line: str) -> bool:
        """`    key: value` lines of a job or error block (`    shell:` starts the command);
        other indented lines continue the value before them (a multi-line message)."""
        if line[:1] in (" ", "\t") and not _opens_block(line.strip()):
            if self.mode == "error" and line.strip() == "shell:":
                self.mode = "shell"
                self.shell_text = BoundedText()
                return True
            m = FIELD.fullmatch(line)
            if m and (self.last_key != "message" or m.group(1) in BLOCK_KEYS):
                self.block[m.group(1)] = m.group(2)
                self.last_key = m.group(1)
            else:
                self._continue_value(line.strip())
            return True
        if self.mode == "error" and self._in_submit_message(line):
            self._continue_value(line)
            return True
        self.close_block()
        return False

    def _continue_value(self, text: str) -> None:
        """A line of a multi-line `message:` (sbatch's refusal with its command line)."""
        if self.last_key == "message" and len(self.block["message"]) < MAX_TEXT_CHARS:
            self.block["message"] += "\n" + text

    def _in_submit_message(self, line: str) -> bool:
        """The unindented lines of sbatch's script inside a refusal's `message:`."""
        return (
            bool(line)
            and self.last_key == "message"
            and "jobid" not in self.block
            and bool(SUBMIT_FAILED.search(self.block.get("message", "")))
            and not is_structural(line)
        )

    def _in_shell(self, line: str) -> bool:
        if SHELL_END.fullmatch(line):
            self.mode = "error"  # aux `key: value` lines may follow
            self.last_key = "shell"
            return True
        if is_structural(line):
            self.close_block()
            return False
        assert self.shell_text is not None
        self.shell_text.add(line[8:] if line.startswith("        ") else line)
        return True

    def _in_group(self, line: str) -> bool:
        """A failed group's `message:` and `jobs:` (`rule X:`, `jobid: N`, `output: ...`)."""
        text = line.strip()
        header = JOB_HEADER.fullmatch(text)  # a job of the list, not a job block
        if not line[:1] in (" ", "\t") or _opens_block(text) and not header:
            self.close_block()
            return False
        key, _, value = text.partition(": ")
        if header:
            self.group_jobs.append([header.group(2), None, ""])
        elif key in ("jobid", "output") and self.group_jobs:
            self.group_jobs[-1][1 if key == "jobid" else 2] = value
        elif key == "message":
            self.block["message"] = value
        return True

    def _end_group(self) -> None:
        """Every job of a failed group failed (Snakemake removes all their outputs); 9.x
        prints each one's error block after it, 8.x only the list."""
        jobs, self.group_jobs = self.group_jobs, []
        text = f"{self.error_line[1].strip()}\n{self.block.get('message', '')}".strip()
        for rule, jobid, output in jobs:
            number = small_int(jobid)
            if number is None:
                continue
            attempt = self._attempt_for(number)
            if attempt is None or attempt.status == "finished" or number in self.pending_restart:
                attempt = self._new_attempt(number, rule, {"output": output}, self.block_time)
            self._fail(attempt, text, self.block_time or self.now)
            attempt.line = self.error_line[0]
        if not jobs:
            self._not_understood(*self.error_line, "a failed group without the jobs it ran")

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
            self.shown_text = BoundedText(MAX_SHOWN_CHARS)
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
            self.in_stats = False
            return
        for prefix, pattern, handler in self.top_lines:
            if not line.startswith(prefix):
                continue
            m = pattern.fullmatch(line) if pattern is not None else None
            if (pattern is None or m) and handler(line, m) is not False:
                return
        if self._starts_exception(line):
            self.mode = "exception"
            self.exc = _Exception(BoundedText(), self.now, self.lineno, self.printed.take())
            self.exc.text.add(line)
            return
        if line.startswith(MARKERS):
            self.seen_marker = True
        elif self.skip_next or self.in_stats:
            self.skip_next = False
        elif not is_snakemake_info(line):  # a job's own output (a rule without `log:`)
            sole = next(iter(self.running)) if len(self.running) == 1 else None
            self.printed.add(self.lineno, line, sole)

    def _starts_exception(self, line: str) -> bool:
        """Snakemake's own exceptions; `XError: ...` while jobs run is a tool's output."""
        if line == "RuleException:" or line.startswith("Waiting at most"):
            return True
        m = EXCEPTION_START.match(line)
        if m is None:
            return False
        return not (self.running and TOOL_ERROR.match(line) and not line.startswith("Workflow"))

    def _on_timestamp(self, line: str, _m) -> bool:
        """`[Sat Nov 28 15:32:04 2026]`, alone or before a line about a group job."""
        when = parse_timestamp(line)
        if when is None:
            m = TIMESTAMP.match(line)
            when = parse_timestamp(m.group()) if m else None
            if when is None:
                return False
        self.now = when
        if self.first_time is None:
            self.first_time = when
        return True

    def _on_indented(self, line: str, _m) -> bool:
        m = HEADER_FIELD.fullmatch(line)
        if m:
            self._header(m.group(1), m.group(2))
            return True
        text = line.strip()
        group = GROUP_MESSAGE.fullmatch(text)
        if group:  # 9.x prints no header for a failed group
            self._open_block("group", "")
            self.error_line = (self.lineno, f"Error in group {group.group(1)}")
            return True
        if _opens_block(text):
            self.top(text)  # a job of a group: its blocks are indented
            return True
        return False  # a job's own output

    def _on_job_header(self, _line: str, m) -> None:
        self._open_block("job", m.group(2))

    def _on_error_header(self, line: str, _m) -> None:
        """`Error in rule X:`; a header cut or garbled still opens the block (its jobid may
        name a known job)."""
        m = ERROR_HEADER.fullmatch(line)
        self._open_block("error", m.group(1) if m else "")
        self.error_line = (self.lineno, line)
        self.shell_text = None

    def _on_group_error(self, line: str, _m) -> None:
        self._open_block("group", "")
        self.error_line = (self.lineno, line.rstrip(":"))

    def _on_slurm_failed(self, line: str, _m) -> bool:
        """`SLURM-job 'M' failed, SLURM status is: 'S'` on a line of its own."""
        m = SLURM_FAILED.search(line)
        if m is None:
            return False
        self.slurm_failed_lines.append((self.lineno, line, m.group(1)))
        for attempts in self.jobs.values():
            attempt = attempts[-1]
            if attempt.slurm_job_id == m.group(1) and attempt.status != "finished":
                attempt.slurm_state = m.group(2)
                self._fail(attempt, line, self.now)
        return True

    def _on_removing(self, _line: str, _m) -> None:
        self.skip_next = not _line.rstrip().endswith(".")  # the files follow on the next line

    def _on_stats(self, _line: str, _m) -> None:
        self.seen_marker = True
        self.in_stats = True

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

    def _on_finished_8(self, _line: str, m) -> None:
        self._finished(int(m.group(1)), "")

    def _on_restart(self, _line: str, m) -> None:
        jobid = int(m.group(1))
        self.restarts[jobid] = self.restarts.get(jobid, 0) + 1
        self.pending_restart.add(jobid)
        self.restart_lines.append((self.lineno, jobid))

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
        elif key == "Workflow ID":
            self.workflow_id = value.strip()
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
        elif attempt.status == "failed":  # a retry without a job block (--quiet rules)
            attempt = self._new_attempt(jobid, attempt.rule, {}, None)
        attempt.status = "finished"
        attempt.ended_at = self.now
        self.running.discard(jobid)
        if not attempt.rule:
            attempt.rule = rule
        if seen_block:  # without its job block the wildcards are unknown
            self.succeeded.append(
                SucceededJob(
                    jobid, attempt.rule, attempt.wildcards, attempt.ended_at, attempt.output
                )
            )
        self.pending_restart.discard(jobid)
        self.printed.job_finished(jobid)
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
        self._unaccounted()
        started = run_id_time(self.run_id) or self.header_date or self.first_time
        if run_id_time(self.run_id) is None and started is not None:
            # a console output or a paste (`console.txt`): its name says nothing of the run
            self.run_id = f"{self.run_id}@{started:%Y-%m-%dT%H%M%S}"
        failed_jobs, recovered, unfinished = self._outcomes()
        self.not_understood.sort(key=lambda item: item.line)
        workflow_errors = list(self.run_errors)
        complete = self.end_marker or (self.last_event_terminal_error and complete_lines)
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
            workflow_id=self.workflow_id,
            executor="slurm" if self.slurm else "local",
            succeeded=self.succeeded,
            not_understood=self.not_understood,
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
                if failures:
                    self._not_understood(
                        failures[-1].line, f"Error in rule {last.rule} (jobid {jobid})",
                        "the job failed and was restarted; the log ends before the outcome",
                    )  # fmt: skip
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
        if self.version and not self.version.startswith(("8.", "9.")):
            warnings.append(f"written by Snakemake {self.version}; this parser knows 8.x and 9.x")
        if self.not_understood_dropped:
            warnings.append(f"{self.not_understood_dropped} more line(s) not understood")
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
            printed=last.printed,
            submit_failed=last.submit_failed,
            line=last.line,
        )

    def _unaccounted(self) -> None:
        """Failure lines that became no failed attempt of a job: restarts, SLURM failures,
        jobs of failed groups, exceptions no error block claimed."""
        def failed(jobid: int, line: int) -> bool:
            return any(a.status == "failed" and a.line <= line for a in self.jobs.get(jobid, ()))

        for line, jobid in self.restart_lines:
            if not failed(jobid, line):
                self._not_understood(
                    line, f"Trying to restart job {jobid}.", "no failure of that job precedes it"
                )
        for line, text, slurm_id in self.slurm_failed_lines:
            if not any(
                a.slurm_job_id == slurm_id and a.status == "failed"
                for attempts in self.jobs.values()
                for a in attempts
            ):
                self._not_understood(line, text, f"no job was submitted as SLURM job {slurm_id}")
        for exc in self.rule_exceptions:
            self._not_understood(
                exc.lineno, _summary(exc.text.text()),
                "an exception without an error block: which job failed is not in the log",
            )  # fmt: skip


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


def _opens_block(text: str) -> bool:
    """A time stamp, job header or error header (indented inside a group job)."""
    return bool(
        text.startswith("[") and TIMESTAMP.fullmatch(text)
        or text.startswith(JOB_HEADER_PREFIXES) and JOB_HEADER.fullmatch(text)
        or text.startswith("Error in rule ") and ERROR_HEADER.fullmatch(text)
    )


def _quotes(text: BoundedText, command: str) -> bool:
    """The exception text quotes `command` (its first line), also when a pager cut one of
    them: the part both still show must agree."""
    if command in text.text():
        return True
    for line in text.lines:
        if is_cut(line) and "Command '" in line:
            shown = line[:-1].split("Command '", 1)[1].removeprefix("set -euo pipefail;").strip()
            if len(shown) >= MIN_CUT_MATCH and command.startswith(shown):
                return True
    return False


def _shortened(text: str, limit: int = MAX_SHOWN_LINE) -> str:
    return text if len(text) <= limit else f"{text[: limit - 5]} ..."


def _summary(text: str) -> str:
    """The line of an exception text that says most: its exit status, else its last line."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "exit status" in line or "Error" in line:
            return line
    return lines[-1] if lines else ""


def _first_wildcards(attempts: list[JobAttempt]) -> dict[str, str]:
    for a in reversed(attempts):
        if a.wildcards:
            return a.wildcards
    return {}


# ---------------------------------------------------------------------------- public API


def parse_log(path: str | Path) -> RunLog:
    """Parse one Snakemake main log (or a run's console output, a pasted log). Raises
    LogFormatError for anything that is not one.

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
    lines = LogLines(path, parser.warnings)
    try:
        with handle:
            for number, line in lines.read(handle):
                parser.lineno = number
                parser.feed(line)
                if number == SNIFF_LINES and not parser.seen_marker:
                    raise LogFormatError(unknown_format(path, lines.not_utf8))
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    except (ValueError, OverflowError, LookupError, RecursionError, MemoryError) as exc:
        # a bug or a format this parser does not know: still a clean error, with the line
        raise LogFormatError(
            f"{path}: cannot parse line {lines.lineno}: {type(exc).__name__}: {exc}"
        ) from exc
    if lines.lineno and not parser.seen_marker:
        raise LogFormatError(unknown_format(path, lines.not_utf8))
    try:
        run = parser.result(lines.complete)
    except (ValueError, OverflowError, LookupError) as exc:
        raise LogFormatError(f"{path}: cannot parse: {type(exc).__name__}: {exc}") from exc
    if lines.not_utf8:
        run.warnings.append(
            f"{lines.not_utf8} line(s) are not valid UTF-8; undecodable bytes were replaced"
        )
    return run
