"""Library exceptions. The CLI turns every NeuroflowError into a clean message and exit 1."""


class NeuroflowError(Exception):
    """Base of every error the library raises on purpose (bad input, missing things)."""


class ConfigError(NeuroflowError):
    """The workflow configuration is invalid or missing."""


class SheetError(NeuroflowError):
    """The sessions sheet is invalid (the message names the row)."""


class LogFormatError(NeuroflowError):
    """A log file is not a Snakemake log we can read (binary, truncated, unknown format)."""


class DatabaseError(NeuroflowError):
    """The dead-letter database is missing, unreadable or of an unknown schema."""


class EntryNotFound(NeuroflowError):
    """No dead-letter entry has that ID."""


class WorkflowLocked(NeuroflowError):
    """A running Snakemake holds the working directory's lock."""


class SnakemakeFailed(NeuroflowError):
    """Snakemake could not be started or ended without a usable log."""
