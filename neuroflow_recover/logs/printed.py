"""Lines jobs print into the main log (a rule without `log:` writes its stderr to the console):
which failed job each belongs to, and the bounded texts that hold them."""

from __future__ import annotations

from collections import deque

MAX_TEXT_CHARS = 64 * 1024  # text kept per exception, shell command or job's printed lines

# Snakemake's own lines outside blocks (progress, scheduling, the job-stats table, conda,
# storage): never a job's output
_SNAKEMAKE_INFO = (
    "Select jobs to execute",
    "Execute ",
    "Assuming unrestricted shared filesystem",
    "host: ",
    "Building DAG of jobs",
    "Using shell:",
    "Provided ",
    "Rules claiming more threads",
    "Job stats:",
    "Job counts:",
    "Shutting down",
    "Will exit after finishing",
    "Waiting for more resources",
    "Cleaning up SLURM log files",
    "SLURM run ID:",
    "MinJobAge",
    "Ready jobs",
    "Resources before job selection",
    "Resources after job selection",
    "Selected jobs",
    "Using greedy selector",
    "Inferred runtime value",
    "Reason: ",
    "Removing temporary output",
    "Touching output file",
    "Write-protecting output",
    "Activating conda environment",
    "Activating singularity image",
    "Activating apptainer image",
    "Creating conda environment",
    "Using profile",
    "Using workflow specific profile",
    "Retrieving ",
    "Storing ",
    "sbatch call:",
    "Submitted job ",
    "Submitted group job ",
    "group job ",
    "No wall time information given",
    "No job memory information",
    "Cancelling snakemake on user request",
    "Terminating processes on user request",
    "Exiting because",
    "WorkflowError:",
    "At least one job did not complete successfully",
)


def is_snakemake_info(line: str) -> bool:
    return line.startswith(_SNAKEMAKE_INFO)


class BoundedText:
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

    def extend(self, other: BoundedText) -> None:
        self.dropped += other.dropped
        for line in other.lines:
            self.add(line)

    def text(self) -> str:
        body = "\n".join(self.lines)
        if self.dropped:
            return f"[... {self.dropped} line(s) omitted ...]\n{body}"
        return body

    def __bool__(self) -> bool:
        return bool(self.lines)


Line = tuple[int, str, "int | None"]  # (line number, text, the only job running then)


class PrintedLines:
    """The lines since the last event belong to the job of the event that follows them, if
    that job had started when they were printed.

    A tool's stderr reaches the console just before Snakemake's RuleException for it, so an
    exception takes the lines before it (`take`); an error block without an exception (SLURM,
    a partial log) takes them too; a finished job's are dropped. A line printed before the
    failed job started goes to the job that was the only one running then, else to none.
    What the log cannot tell: of parallel jobs that all started before a line, which printed
    it (the next one to fail gets it).
    """

    def __init__(self) -> None:
        self.current: deque[Line] = deque()
        self.size = 0
        self.by_job: dict[int, BoundedText] = {}

    def add(self, lineno: int, line: str, sole_running: int | None) -> None:
        self.current.append((lineno, line, sole_running))
        self.size += len(line) + 1
        while self.size > MAX_TEXT_CHARS and len(self.current) > 1:
            self.size -= len(self.current.popleft()[1]) + 1

    def take(self) -> list[Line]:
        """The lines since the last event; starts a new group."""
        taken = list(self.current)
        self.current.clear()
        self.size = 0
        return taken

    def job_finished(self, jobid: int) -> None:
        self.take()
        self.by_job.pop(jobid, None)

    def of_job(self, jobid: int, started: int, group: list[Line]) -> str:
        """The job's lines: those kept for it, then those of `group` printed after it started
        (line `started`); the group's earlier lines go to the job running alone then."""
        text = self.by_job.pop(jobid, None) or BoundedText()
        for lineno, line, sole in group:
            if lineno > started or sole == jobid:
                text.add(line)
            elif sole is not None:
                self.by_job.setdefault(sole, BoundedText()).add(line)
        return text.text()
