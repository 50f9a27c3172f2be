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


@cli.command("classify")
@click.option("--exit-code", type=int, default=None, help="The tool's exit code, if known.")
@click.option(
    "--slurm-state", default=None, metavar="STATE",
    help="The SLURM job state (OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, FAILED, ...), if known.",
)
@click.option("--json", "as_json", is_flag=True, help="Print class, retryable, resource, "
              "pattern id and evidence as JSON.")
@click.argument("file", metavar="FILE|-")
@click.pass_obj
@library_errors
def classify_cmd(
    obj: Context, exit_code: int | None, slurm_state: str | None, as_json: bool, file: str
) -> None:
    """Classify a failure log (FILE, or - for stdin): print its error class.

    Uses the shipped pattern pack plus the workflow config's error_handling.patterns
    (DIRECTORY/config/config.yaml and --configfile, when present).
    """
    from .classifier import classify_input

    source = sys.stdin.buffer if file == "-" else file
    result = classify_input(
        source, exit_code=exit_code, slurm_state=slurm_state,
        workdir=obj.directory, configfiles=obj.configfiles,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.error_class)


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
    non-retryable class, its failure's circuit breaker is open, or (under `run`, which sets
    NEUROFLOW_DEFER_TRANSIENT=1) it failed transiently and `run` retries it after a backoff.
    Arguments @NEUROFLOW_THREADS@, @NEUROFLOW_MEM_MB@, @NEUROFLOW_RUNTIME@ and
    @NEUROFLOW_DISK_MB@ in the tool's command line become this attempt's resources.
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


def _open_db(obj: Context, *, create: bool = True):
    from .db import open_database

    return open_database(obj.db, obj.directory, create=create)


def _load_cfg(obj: Context) -> dict:
    from .config import load_config

    return load_config(obj.directory, obj.configfiles)


def _who() -> str:
    import getpass

    return os.environ.get("USER") or getpass.getuser()


def stall_option(func):
    """--stall-timeout (owner: watchdog): bounded time for SLURM runs."""
    return click.option(
        "--stall-timeout",
        "stall_seconds",
        type=click.FloatRange(min=0),
        envvar="NEUROFLOW_STALL_SECONDS",
        default=None,
        metavar="SECONDS",
        help="SLURM runs: stop Snakemake when it printed nothing and no job of the run was "
        "queued or running for this long (e.g. sacct broken); 0 = never "
        "[default: 900; env NEUROFLOW_STALL_SECONDS].",
    )(func)


@cli.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--profile", default=None, help="Snakemake profile (passed as --profile).")
@click.option(
    "--unlock", is_flag=True, help="Remove a stale Snakemake lock first (no Snakemake running)."
)
@click.option(
    "--delay-scale",
    type=click.FloatRange(min=0),
    default=None,
    help="Multiply retry delays (env NEUROFLOW_DELAY_SCALE; e.g. 0.01 in tests) [default: 1].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@stall_option
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@library_errors
def run_cmd(obj, profile, unlock, delay_scale, as_json, stall_seconds, snakemake_args) -> None:
    """Run the workflow; retry transient failures with backoff; dead-letter the rest.

    Snakemake options go after `--` (e.g. `run -- --cores 2`). Exit status: 0 when every
    job succeeded, 1 when anything was dead-lettered or Snakemake failed.
    """
    from .runner import run_workflow
    from .snakemake_cmd import Invocation, split_targets

    options, targets = split_targets(list(snakemake_args))
    invocation = Invocation(list(obj.configfiles), profile, options)
    cfg = _load_cfg(obj)
    db = _open_db(obj)
    with db.sessions() as session:
        summary = run_workflow(
            session,
            obj.directory,
            cfg,
            invocation,
            targets,
            delay_scale=delay_scale,
            unlock=unlock,
            stall_seconds=stall_seconds,
        )
    if as_json:
        echo_json(summary.to_dict())
    else:
        from .report import render_run_summary

        click.echo(render_run_summary(summary))
    if summary.exit_status:
        raise click.exceptions.Exit(summary.exit_status)


@cli.command("ingest")
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
@library_errors
def ingest_cmd(obj, logs, as_json) -> None:
    """Add the failed jobs of Snakemake logs to the queue (default: every new main log)."""
    from .ingest import ingest_logs
    from .snakemake_cmd import Invocation

    for path in logs:
        if not path.exists():
            raise NeuroflowError(f"no such log: {path}")
    cfg = _load_cfg(obj)
    db = _open_db(obj)
    with db.sessions() as session:
        report = ingest_logs(
            session,
            obj.directory,
            cfg,
            list(logs) or None,
            invocation=Invocation(list(obj.configfiles)).to_dict(),
        )
    if as_json:
        echo_json(report.to_dict())
    else:
        from .report import render_ingest_report

        click.echo(render_ingest_report(report))


@cli.command("list")
@click.option("--pipeline", default=None, help="Only this pipeline (e.g. qsiprep).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@library_errors
def list_cmd(obj, pipeline, limit, include_resolved, as_json) -> None:
    """List dead-letter entries, newest first (unresolved only unless --all)."""
    from .dlq import entry_summary, list_entries
    from .report import render_table

    db = _open_db(obj, create=False)
    with db.sessions() as session:
        entries = list_entries(
            session, pipeline, include_resolved=include_resolved, limit=limit
        )
        if as_json:
            echo_json([entry_summary(entry) for entry in entries])
        elif not entries:
            click.echo("no " + ("" if include_resolved else "unresolved ") + "dead-letter entries")
        else:
            click.echo(render_table(entries, show_resolved=include_resolved))


@cli.command("show")
@click.argument("entry_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@library_errors
def show_cmd(obj, entry_id, as_json) -> None:
    """Everything about one entry: error, evidence, targets, logs, attempt history."""
    from .dlq import entry_details, get_entry
    from .report import render_entry

    db = _open_db(obj, create=False)
    with db.sessions() as session:
        entry = get_entry(session, entry_id)
        if as_json:
            echo_json(entry_details(entry))
        else:
            click.echo(render_entry(entry))


@cli.command("retry")
@click.argument("entry_id", type=int)
@click.option(
    "--force",
    is_flag=True,
    help="Retry a non-retryable entry even though neither its inputs nor the configuration "
    "changed since it failed.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the Snakemake command and its targets, run nothing."
)
@click.option("--unlock", is_flag=True, help="Remove a stale Snakemake lock first.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@stall_option
@click.pass_obj
@library_errors
def retry_cmd(obj, entry_id, force, dry_run, unlock, as_json, stall_seconds) -> None:
    """Re-run an entry's job (and what depends on it); resolve it only if it succeeds.

    A non-retryable entry (ValidationError, ConfigurationError, NonRetryableError) is re-run
    only when one of its job's inputs or the configuration changed since it failed (the
    cause was fixed), or with --force. Prints the targets and the Snakemake command.
    Exit status: 0 when resolved (or --dry-run), 1 when the job failed again or was refused.
    """
    from .report import render_retry
    from .runner import retry_entry

    cfg = _load_cfg(obj)
    db = _open_db(obj, create=False)
    with db.sessions() as session:
        outcome = retry_entry(
            session,
            entry_id,
            obj.directory,
            cfg,
            force=force,
            dry_run=dry_run,
            unlock=unlock,
            stall_seconds=stall_seconds,
        )
    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(render_retry([outcome]))
    if outcome.still_open:
        raise click.exceptions.Exit(1)


@cli.command("retry-all")
@click.option("--pipeline", required=True, help="Retry every unresolved entry of this pipeline.")
@click.option(
    "--force",
    is_flag=True,
    help="Include non-retryable entries whose inputs and configuration did not change.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the Snakemake command(s) and targets, run nothing."
)
@click.option("--unlock", is_flag=True, help="Remove a stale Snakemake lock first.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@stall_option
@click.pass_obj
@library_errors
def retry_all_cmd(obj, pipeline, force, dry_run, unlock, as_json, stall_seconds) -> None:
    """Retry a pipeline's unresolved entries (one Snakemake run per invocation).

    Exit status: 0 when every retried entry was resolved, 1 when any stays open.
    """
    from .report import render_retry
    from .runner import retry_all

    cfg = _load_cfg(obj)
    db = _open_db(obj, create=False)
    with db.sessions() as session:
        outcomes = retry_all(
            session,
            pipeline,
            obj.directory,
            cfg,
            force=force,
            dry_run=dry_run,
            unlock=unlock,
            stall_seconds=stall_seconds,
        )
    if as_json:
        echo_json([outcome.to_dict() for outcome in outcomes])
    else:
        click.echo(render_retry(outcomes) if outcomes else f"no unresolved entries for {pipeline}")
    if any(outcome.still_open for outcome in outcomes):
        raise click.exceptions.Exit(1)


@cli.command("resolve")
@click.argument("entry_id", type=int)
@click.option("--notes", default=None, help="Why it is resolved.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@click.pass_obj
@library_errors
def resolve_cmd(obj, entry_id, notes, as_json) -> None:
    """Mark an entry resolved without a retry (resolved_by = $USER)."""
    from .dlq import entry_summary, resolve_entry

    db = _open_db(obj, create=False)
    with db.sessions.begin() as session:
        entry = resolve_entry(session, entry_id, _who(), notes)
        data = entry_summary(entry)
    if as_json:
        echo_json(data)
    else:
        click.echo(f"dead-letter entry {entry_id} resolved")


@cli.command("stats")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True,
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.pass_obj
@library_errors
def stats_cmd(obj, fmt, output) -> None:
    """Totals, unresolved, by pipeline, error class and subject."""
    from .report import queue_stats, render_stats

    db = _open_db(obj, create=False)
    with db.sessions() as session:
        text = render_stats(queue_stats(session), fmt)
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from exc
    logsetup.get_logger(__name__).info("statistics written", path=str(output))

# === end section: dead-letter queue ===


def main() -> None:
    cli(prog_name="neuroflow-recover")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
