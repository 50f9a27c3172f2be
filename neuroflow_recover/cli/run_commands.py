"""Commands that run Snakemake: `run`, `retry`, `retry-all`."""

from __future__ import annotations

import click

from ..errors import ExitCode
from .app import Context, cli, echo_json, exit_with, library_errors
from .options import json_option, retry_options, stall_option, unlock_option


@cli.command(
    "run",
    short_help="Run the workflow; retry transient failures; queue the rest.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--profile", default=None, help="Snakemake profile (passed as --profile).")
@unlock_option
@click.option(
    "--delay-scale",
    type=click.FloatRange(min=0),
    default=None,
    help="Multiply retry delays (env NEUROFLOW_DELAY_SCALE; e.g. 0.01 in tests) [default: 1].",
)
@click.option(
    "--full", is_flag=True,
    help="Let Snakemake plan every session (default: only the subjects with work, when "
    "that provably gives the same jobs).",
)  # fmt: skip
@json_option
@stall_option
@click.argument("snakemake_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@library_errors
def run_cmd(
    obj: Context, profile, unlock, force_unlock, delay_scale, full, as_json, stall_seconds,
    snakemake_args,
):
    """Run the workflow; retry transient failures with backoff; dead-letter the rest.

    Snakemake options go after `--`. Without targets, Snakemake gets only the subjects
    that have work, when neuroflow can show that this is what a full plan would run (else
    it plans in full and says why; --full forces that). Exit status 0 when every job
    succeeded, 1 when anything was dead-lettered or Snakemake failed.

    \b
    Examples:
        neuroflow-recover --configfile study.yaml run -- --cores 16
        neuroflow-recover --configfile study.yaml run --profile profiles/slurm
        neuroflow-recover run -- --cores 4 results/derivatives/qsiparc/sub-01
    """
    from ..recover.run import run_workflow
    from ..workflow.invocation import Invocation, split_targets
    from .render import render_run_summary

    options, targets = split_targets(list(snakemake_args))
    invocation = Invocation(list(obj.configfiles), profile, options)
    cfg = obj.config()
    db = obj.open_db()
    with db.sessions() as session:
        summary = run_workflow(
            session,
            obj.directory,
            cfg,
            invocation,
            targets,
            delay_scale=delay_scale,
            unlock=unlock,
            force_unlock=force_unlock,
            stall_seconds=stall_seconds,
            full=full,
        )
    obj.aftercare(cfg, ingested=True, db=db)
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(render_run_summary(summary))
    exit_with(summary.exit_status)


@cli.command("retry", short_help="Re-run one entry's job; resolve it if it succeeds.")
@click.argument("entry_id", type=int)
@retry_options
@click.pass_obj
@library_errors
def retry_cmd(
    obj: Context, entry_id, force, dry_run, unlock, force_unlock, as_json, stall_seconds
) -> None:
    """Re-run an entry's job (and what depends on it); resolve it only if it succeeds.

    A non-retryable entry (ValidationError, ConfigurationError, NonRetryableError) is re-run
    only when one of its job's inputs or the configuration changed since it failed (the
    cause was fixed), or with --force. Prints the Snakemake command and its targets.

    \b
    Examples:
        neuroflow-recover retry 3 --dry-run
        neuroflow-recover retry 3
        neuroflow-recover retry 3 --force
    """
    from ..recover.retry import RetryOptions, retry_entry
    from .render import render_retry

    obj.catch_up()
    options = RetryOptions(force, dry_run, unlock, force_unlock, stall_seconds=stall_seconds)
    cfg = obj.config_or_defaults()
    db = obj.open_db(create=False)
    with db.sessions() as session:
        outcome = retry_entry(session, entry_id, obj.directory, cfg, options)
    obj.aftercare(cfg, ingested=not dry_run, db=db)
    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(render_retry([outcome]))
    exit_with(ExitCode.FAILED if outcome.still_open else ExitCode.OK)


@cli.command("retry-all", short_help="Retry every unresolved entry of a pipeline.")
@click.option("--pipeline", required=True, help="Retry every unresolved entry of this pipeline.")
@retry_options
@click.pass_obj
@library_errors
def retry_all_cmd(
    obj: Context, pipeline, force, dry_run, unlock, force_unlock, as_json, stall_seconds
) -> None:
    """Retry a pipeline's unresolved entries (one Snakemake run per invocation).

    Entries that `retry` would refuse are listed as skipped. Exit status 0 when every entry
    was resolved (or, with --dry-run, would run), 1 when any stays open or was skipped.

    \b
    Examples:
        neuroflow-recover retry-all --pipeline qsiprep --dry-run
        neuroflow-recover retry-all --pipeline qsirecon --json
    """
    from ..recover.retry import RetryOptions, retry_all
    from .render import render_retry

    obj.catch_up()
    options = RetryOptions(force, dry_run, unlock, force_unlock, stall_seconds=stall_seconds)
    cfg = obj.config_or_defaults()
    db = obj.open_db(create=False)
    with db.sessions() as session:
        outcomes = retry_all(session, pipeline, obj.directory, cfg, options)
    obj.aftercare(cfg, ingested=not dry_run, db=db)
    if as_json:
        echo_json([outcome.to_dict() for outcome in outcomes])
    else:
        click.echo(render_retry(outcomes) if outcomes else f"no unresolved entries for {pipeline}")
    not_done = any(outcome.still_open or outcome.skipped for outcome in outcomes)
    exit_with(ExitCode.FAILED if not_done else ExitCode.OK)
