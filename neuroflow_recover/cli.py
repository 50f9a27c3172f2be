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


@cli.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--rule", required=True, help="The Snakemake rule this step belongs to.")
@click.option(
    "--wildcards", "wildcards", multiple=True, metavar="NAME=VALUE",
    help="One wildcard of the job (repeat: --wildcards subject=01 --wildcards session=02).",
)
@click.option("--attempt", type=click.IntRange(min=1), default=1, show_default=True,
              help="Snakemake's attempt number of this job.")
@click.option("--log", "log_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The rule log: the tool's stdout+stderr are streamed into it.")
@click.option("--expect", multiple=True, type=click.Path(path_type=Path),
              help="An output the tool must write (files must be non-empty); repeatable.")
@click.option("--mem-mb", type=int, required=True, help="Memory given to this attempt (MB).")
@click.option("--runtime", type=int, required=True, help="Time limit of this attempt (minutes).")
@click.option("--threads", type=int, required=True, help="Threads given to this attempt.")
@click.option("--disk-mb", type=int, default=None, help="Disk given to this attempt (MB).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
@library_errors
def exec_step(
    obj: Context,
    rule: str,
    wildcards: tuple[str, ...],
    attempt: int,
    log_file: Path,
    expect: tuple[Path, ...],
    mem_mb: int,
    runtime: int,
    threads: int,
    disk_mb: int | None,
    command: tuple[str, ...],
) -> None:
    """Run one attempt of a rule's tool: log it, check outputs, classify, record.

    Usage: exec --rule R --wildcards k=v ... --attempt N --log F --expect P ... -- TOOL ARGS

    Exit code: the tool's (1 when it exited 0 but an --expect output is missing, 128+N when
    a signal stopped it), 3 when the tool was not started because attempt N-1 failed with a
    non-retryable class or its failure's circuit breaker is open.
    """
    from .stepexec import StepRequest, parse_wildcards, run_step

    resources = {"mem_mb": mem_mb, "runtime": runtime, "threads": threads}
    if disk_mb is not None:
        resources["disk_mb"] = disk_mb
    result = run_step(
        StepRequest(
            rule=rule,
            wildcards=parse_wildcards(wildcards),
            attempt=attempt,
            log=log_file,
            command=list(command),
            expect=list(expect),
            resources=resources,
            workdir=obj.directory,
            configfiles=obj.configfiles,
        )
    )
    click.echo(result.summary, err=True)
    if result.exit_code:
        raise click.exceptions.Exit(result.exit_code)


# === end section: exec ===

# === section: dead-letter queue, run, retry, ingest, stats (owner: dlq) ===

# === end section: dead-letter queue ===


def main() -> None:
    cli(prog_name="neuroflow-recover")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
