"""Option decorators shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import environment

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

output_option = click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file instead of stdout.",
)  # fmt: skip


def format_option(*choices: str):
    """``--format`` of a report command (the first choice is the default)."""
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=choices[0],
        show_default=True,
    )  # fmt: skip

stall_option = click.option(
    "--stall-timeout",
    "stall_seconds",
    type=click.FloatRange(min=0),
    envvar=environment.STALL_SECONDS,
    default=None,
    metavar="SECONDS",
    help="SLURM runs: stop Snakemake when it printed nothing and no job of the run was "
    "queued or running for this long (e.g. sacct broken); 0 = never "
    "[default: 900; env NEUROFLOW_STALL_SECONDS].",
)

unlock_option = click.option(
    "--unlock", is_flag=True, help="Remove a stale Snakemake lock first (no Snakemake running)."
)


def retry_options(func):
    """--force, --dry-run, --unlock, --json and --stall-timeout of `retry` and `retry-all`."""
    for decorator in reversed(
        (
            click.option(
                "--force",
                is_flag=True,
                help="Also retry a non-retryable entry whose inputs and configuration did "
                "not change since it failed.",
            ),
            click.option(
                "--dry-run", is_flag=True, help="Print the Snakemake command and targets only."
            ),
            unlock_option,
            json_option,
            stall_option,
        )
    ):
        func = decorator(func)
    return func
