"""The `neuroflow-recover` command line: thin click commands over the library."""

from . import queue_commands, run_commands, step_commands  # noqa: F401 - registers them
from .app import cli, main

__all__ = ["cli", "main"]
