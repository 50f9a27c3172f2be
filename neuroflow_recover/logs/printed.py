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


class PrintedLines:
    """The lines since the last event belong to the job of the event that follows them.

    A tool's stderr reaches the console just before Snakemake's RuleException for it, so an
    exception takes the lines before it (`take`); an error block without an exception (SLURM,
    a partial log) takes them too; a finished job's are dropped. When a new job starts, the
    lines so far go to the job that was running, if only one was: with several running, their
    lines interleave and are attributed to none.
    """

    def __init__(self) -> None:
        self.current = BoundedText()
        self.by_job: dict[int, BoundedText] = {}

    def add(self, line: str) -> None:
        self.current.add(line)

    def take(self) -> BoundedText | None:
        """The lines since the last event (None if there are none); starts a new group."""
        if not self.current:
            return None
        taken, self.current = self.current, BoundedText()
        return taken

    def job_started(self, running: list[int]) -> None:
        taken = self.take()
        if taken is not None and len(running) == 1:
            self.by_job.setdefault(running[0], BoundedText()).extend(taken)

    def job_finished(self, jobid: int) -> None:
        self.take()
        self.by_job.pop(jobid, None)

    def of_job(self, jobid: int, *groups: BoundedText | None) -> str:
        """The job's own lines and the given groups, in order; forgets the job's."""
        text = self.by_job.pop(jobid, None) or BoundedText()
        for group in groups:
            if group is not None:
                text.extend(group)
        return text.text()
