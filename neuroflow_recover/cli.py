"""The neuroflow-recover command line: thin wrappers over the library.

Each command parses its arguments, calls one library function and prints. Data goes to
stdout, diagnostics to stderr (structlog). Every NeuroflowError becomes a ClickException
(exit 1) with its message; nothing is half-written because the library functions own no
transaction and the CLI commits only after they return.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import logsetup
from .errors import NeuroflowError


class Context:
    """What every command needs: the workflow directory and the database URL."""

    def __init__(
        self, directory: Path, db: str | None, verbose: int, configfiles: tuple[str, ...]
    ):
        self.directory = directory
        self.db = db
        self.verbose = verbose
        # config files as Snakemake gets them (relative to the workflow directory);
        # empty = config/config.yaml
        self.configfiles = configfiles


def library_errors(func):
    """Turn library errors into clean CLI errors (exit 1, message on stderr)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NeuroflowError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The workflow directory Snakemake runs in.",
)
@click.option(
    "--db",
    envvar="NEUROFLOW_DB",
    default=None,
    help="Dead-letter database: a SQLAlchemy URL or a file path "
    "[default: DIRECTORY/.neuroflow/neuroflow.db; env NEUROFLOW_DB].",
)
@click.option(
    "--configfile",
    "configfiles",
    multiple=True,
    help="Workflow config file(s), as given to Snakemake [default: config/config.yaml].",
)
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-vv for debug).")
@click.version_option(package_name="neuroflow")
@click.pass_context
def cli(
    ctx: click.Context,
    directory: Path,
    db: str | None,
    configfiles: tuple[str, ...],
    verbose: int,
) -> None:
    """Classify failed Snakemake jobs, keep a dead-letter queue and re-run exactly what failed."""
    logsetup.configure(verbose)
    ctx.obj = Context(directory, db, verbose, configfiles)


# === section: classify (owner: classifier) ===

# === end section: classify ===

# === section: exec (owner: step runner) ===

# === end section: exec ===

# === section: dead-letter queue, run, retry, ingest, stats (owner: dlq) ===

# === end section: dead-letter queue ===


def main() -> None:
    cli(prog_name="neuroflow-recover")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
