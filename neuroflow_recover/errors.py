"""Library exceptions (one base, NeuroflowError) and the exit-code table of every command."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `neuroflow-recover` exit status means; the same outcome, the same status."""

    OK = 0  # everything asked for was done (every job succeeded, every entry resolved)
    FAILED = 1  # something was not done: a job failed or was dead-lettered, an entry stayed
    #             open or a retry was refused, or an error (bad input, config, database, lock)
    USAGE = 2  # the command line is wrong (unknown option, missing argument)
    NOT_STARTED = 3  # exec only: the tool was not started (fail-fast, circuit breaker, deferred)


# what `neuroflow-recover --help` and the README say about each status
EXIT_CODE_HELP = {
    ExitCode.OK: "done: every job succeeded, every entry asked for was resolved",
    ExitCode.FAILED: "not done: a job failed or was dead-lettered, an entry stayed open, a "
    "retry was refused, or an error (bad input or config, no database, workflow locked)",
    ExitCode.USAGE: "the command line is wrong",
    ExitCode.NOT_STARTED: "exec only: the tool was not started (an earlier attempt's cause, "
    "an open circuit breaker, or a transient failure deferred to `run`); otherwise exec "
    "exits with the tool's own status",
}


class NeuroflowError(Exception):
    """Base of every error the library raises on purpose (bad input, missing things)."""

    exit_code = ExitCode.FAILED


class ConfigError(NeuroflowError):
    """The workflow configuration is invalid or missing."""


class SheetError(NeuroflowError):
    """The sessions sheet is invalid (the message names the row)."""


class LogFormatError(NeuroflowError):
    """A log file is not a Snakemake log we can read (binary, truncated, unknown format)."""


class LogReadError(NeuroflowError):
    """The text to classify cannot be read (missing file, a directory, no permission)."""


class UnknownErrorClass(NeuroflowError, ValueError):
    """A name that is not one of the seed's error classes."""


class DatabaseError(NeuroflowError):
    """The dead-letter database is missing, unreadable or of an unknown schema."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot do what was asked now (locked too long, disk full, read-only,
    unreachable); the message says what was and was not recorded."""


class EntryNotFound(NeuroflowError):
    """No dead-letter entry has that ID."""


class WorkflowLocked(NeuroflowError):
    """A running Snakemake holds the working directory's lock."""


class SnakemakeFailed(NeuroflowError):
    """Snakemake could not be started or ended without a usable log."""


class RunStalled(SnakemakeFailed):
    """The watchdog stopped a Snakemake run that made no progress."""
