"""Commands around steps: `exec` (the step runner every rule runs), `classify`, and
`resources` (what the steps requested and used, over the whole study)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import Context, cli, echo_json, exit_with, library_errors, write_output
from .options import format_option, output_option


@cli.command("classify", short_help="Print the error class of a failure log.")
@click.option("--exit-code", type=int, default=None, help="The tool's exit code, if known.")
@click.option(
    "--slurm-state",
    default=None,
    metavar="STATE",
    help="The SLURM job state (OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, FAILED, ...), if known.",
)
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print class, retryable, resource, pattern id and evidence as JSON.",
)  # fmt: skip
@click.option(
    "--explain", is_flag=True,
    help="Also show every pattern that matched (priority, line, source) and why the winner won.",
)  # fmt: skip
@click.argument("file", metavar="FILE|-")
@click.pass_obj
@library_errors
def classify_cmd(
    obj: Context, exit_code: int | None, slurm_state: str | None, as_json: bool, explain: bool,
    file: str,
) -> None:  # fmt: skip
    """Classify a failure log (FILE, or - for stdin): print its error class.

    Uses the shipped pattern pack plus the workflow config's error_handling.patterns
    (DIRECTORY/config/config.yaml and --configfile, when present).

    \b
    Examples:
        neuroflow-recover classify results/logs/qsiprep_preprocess/sub-01.log
        dmesg | tail -50 | neuroflow-recover classify --exit-code 137 -
        neuroflow-recover classify --slurm-state OUT_OF_MEMORY --json slurm-1234.out
        neuroflow-recover classify --explain - < results/logs/qsirecon_reconstruct/sub-01_ses-01.log
    """
    from ..classify.classifier import classify_input
    from .render import render_explanation

    source = sys.stdin.buffer if file == "-" else file
    result = classify_input(
        source, exit_code=exit_code, slurm_state=slurm_state, cfg=obj.config_or_defaults(),
        explain=explain,
    )  # fmt: skip
    if as_json:
        echo_json(result.to_dict())
    elif explain:
        click.echo(render_explanation(result))
    else:
        click.echo(result.error_class)


@cli.command(
    "exec",
    short_help="Run one attempt of a rule's tool (every rule's command).",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--rule", required=True, help="The Snakemake rule this step belongs to.")
@click.option(
    "--wildcards", "wildcards", multiple=True, metavar="NAME=VALUE",
    help="One wildcard of the job (repeat: --wildcards subject=01 --wildcards session=02).",
)  # fmt: skip
@click.option(
    "--attempt", type=click.IntRange(min=1), default=1, show_default=True,
    help="Snakemake's attempt number of this job.",
)  # fmt: skip
@click.option(
    "--log", "log_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The rule log: the tool's stdout+stderr are streamed into it.",
)  # fmt: skip
@click.option(
    "--expect", multiple=True, type=click.Path(path_type=Path),
    help="An output the tool must write (files must be non-empty); repeatable.",
)  # fmt: skip
@click.option("--mem-mb", type=int, required=True, help="Memory given to this attempt (MB).")
@click.option("--runtime", type=int, required=True, help="Time limit of this attempt (minutes).")
@click.option("--threads", type=int, required=True, help="Threads given to this attempt.")
@click.option("--disk-mb", type=int, default=None, help="Disk given to this attempt (MB).")
@click.option(
    "--work", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The tool's work directory: kept for a retry after a memory, runtime, disk or "
    "transient failure (the tool resumes), removed after success.",
)  # fmt: skip
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
    work: Path | None,
    command: tuple[str, ...],
) -> None:
    """Run one attempt of a rule's tool: log it, check outputs, classify, record.

    Exit status: the tool's (1 when it exited 0 but an --expect output is missing, 128+N
    when signal N stopped it), 3 when the tool was not started: attempt N-1 failed with a
    non-retryable class, its failure's circuit breaker is open, or (under `run`, which sets
    NEUROFLOW_DEFER_TRANSIENT=1) it failed transiently and `run` retries it after a backoff.
    Arguments @NEUROFLOW_THREADS@, @NEUROFLOW_MEM_MB@, @NEUROFLOW_RUNTIME@ and
    @NEUROFLOW_DISK_MB@ in the tool's command line become this attempt's resources.
    The record keeps what the tool used (peak memory of its process tree, elapsed and CPU
    time); a success adds it to the stage's usage summary that first attempts learn from.

    \b
    Examples (the shell command of every rule of workflow/):
        neuroflow-recover exec --rule qsiparc_parcellate --wildcards subject=01 \\
          --wildcards session=02 --attempt 1 --log logs/qsiparc.log --expect out.tsv \\
          --mem-mb 4000 --runtime 60 --threads 2 -- qsiparc run ... --n-procs @NEUROFLOW_THREADS@
    """
    from ..step.runner import StepRequest, parse_wildcards, run_step

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
            work=work,
        )
    )
    click.echo(result.summary, err=True)
    exit_with(result.exit_code)


@cli.command("resources", short_help="Requested vs used memory and runtime, per rule.")
@format_option("table", "csv", "json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as --format json).")
@click.option(
    "--no-sacct", "no_sacct", is_flag=True,
    help="Do not ask SLURM's accounting (sacct) for the jobs' MaxRSS, Elapsed, TotalCPU.",
)  # fmt: skip
@output_option
@click.pass_obj
@library_errors
def resources_cmd(obj: Context, fmt: str, as_json: bool, no_sacct: bool, output: Path | None) -> None:
    """Like seff over the whole study: per rule, the memory and runtime the attempts
    requested vs what they used (p50 / p95 / max), CPU efficiency, failed attempts by
    cause, and the first-attempt request the stage's history suggests.

    Reads the attempt records, the SLURM job logs of attempts that left none, and SLURM's
    accounting of every SLURM job (one sacct call per 200 jobs; --no-sacct skips it).

    \b
    Examples:
        neuroflow-recover resources
        neuroflow-recover resources --format csv --output resources.csv
        neuroflow-recover resources --json --no-sacct
    """
    from ..step.report import usage_report
    from .render import render_usage

    rows = usage_report(obj.directory, obj.config_or_defaults(), use_sacct=not no_sacct)
    write_output(render_usage(rows, "json" if as_json else fmt), output)
