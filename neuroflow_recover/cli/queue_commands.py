"""Commands over the dead-letter queue: `ingest`, `list`, `show`, `resolve`, `stats`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import NeuroflowError
from .app import Context, cli, current_user, echo_json, library_errors
from .options import json_option


@cli.command("ingest", short_help="Queue the failed jobs of Snakemake main logs.")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@json_option
@click.pass_obj
@library_errors
def ingest_cmd(obj: Context, logs: tuple[Path, ...], as_json: bool) -> None:
    """Add the failed jobs of Snakemake main logs to the queue (default: every new main log
    under .snakemake/log); a job that succeeded in a later log resolves its entry.

    \b
    Examples:
        neuroflow-recover ingest
        neuroflow-recover ingest .snakemake/log/2026-11-28T153204.406890.snakemake.log
    """
    from ..files import regular_file_problem
    from ..queue.ingest import ingest_logs
    from ..recover.invocation import Invocation
    from ..recover.outcomes import record_pending
    from .render import render_ingest_report

    # a bad path (missing, a symlink loop, a directory, a FIFO, a device) is named at the
    # end; the other logs are ingested
    bad = {path: problem for path in logs if (problem := regular_file_problem(path))}
    named = "; ".join(f"{path}: {problem}" for path, problem in bad.items())
    if logs and len(bad) == len(logs):
        raise NeuroflowError(f"nothing ingested: {named}")
    cfg = obj.config()
    db = obj.open_db()
    with db.sessions() as session:
        record_pending(session, obj.directory, cfg)  # retries whose outcome is not recorded
        report = ingest_logs(
            session,
            obj.directory,
            cfg,
            [path for path in logs if path not in bad] or None,
            invocation=Invocation(list(obj.configfiles)).to_dict(),
        )
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(render_ingest_report(report))
    if bad:
        raise NeuroflowError(f"not ingested: {named} (the other logs were)")


@cli.command("list", short_help="List dead-letter entries, newest first.")
@click.option("--pipeline", default=None, help="Only this pipeline (e.g. qsiprep).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved entries.")
@json_option
@click.pass_obj
@library_errors
def list_cmd(
    obj: Context, pipeline: str | None, limit: int, include_resolved: bool, as_json: bool
) -> None:
    """List dead-letter entries, newest first (unresolved only unless --all).

    \b
    Examples:
        neuroflow-recover list
        neuroflow-recover list --pipeline qsiprep --all --limit 100
        neuroflow-recover list --json
    """
    from ..queue.entries import entry_summary, list_entries
    from .render import render_table

    db = obj.open_db(create=False, readonly=True)
    with db.sessions() as session:
        entries = list_entries(session, pipeline, include_resolved=include_resolved, limit=limit)
        if as_json:
            echo_json([entry_summary(entry) for entry in entries])
        elif not entries:
            click.echo("no " + ("" if include_resolved else "unresolved ") + "dead-letter entries")
        else:
            click.echo(render_table(entries, show_resolved=include_resolved))


@cli.command("show", short_help="Everything about one entry.")
@click.argument("entry_id", type=int)
@json_option
@click.pass_obj
@library_errors
def show_cmd(obj: Context, entry_id: int, as_json: bool) -> None:
    """Everything about one entry: error, evidence, targets, logs, attempt history.

    \b
    Examples:
        neuroflow-recover show 3
        neuroflow-recover show 3 --json
    """
    from ..queue.entries import entry_details, get_entry
    from .render import render_entry

    db = obj.open_db(create=False, readonly=True)
    with db.sessions() as session:
        entry = get_entry(session, entry_id)
        if as_json:
            echo_json(entry_details(entry))
        else:
            click.echo(render_entry(entry))


@cli.command("resolve", short_help="Mark an entry resolved without a retry.")
@click.argument("entry_id", type=int)
@click.option("--notes", default=None, help="Why it is resolved.")
@json_option
@click.pass_obj
@library_errors
def resolve_cmd(obj: Context, entry_id: int, notes: str | None, as_json: bool) -> None:
    """Mark an entry resolved without a retry (resolved_by = $USER).

    \b
    Examples:
        neuroflow-recover resolve 3 --notes "session withdrawn by the site"
    """
    from ..queue.entries import entry_summary, resolve_entry

    db = obj.open_db(create=False)
    with db.sessions.begin() as session:
        entry = resolve_entry(session, entry_id, current_user(), notes)
        data = entry_summary(entry)
    if as_json:
        echo_json(data)
    else:
        click.echo(f"dead-letter entry {entry_id} resolved")


@cli.command("stats", short_help="Queue statistics (table, CSV or JSON).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True,
)  # fmt: skip
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file instead of stdout.",
)  # fmt: skip
@click.pass_obj
@library_errors
def stats_cmd(obj: Context, fmt: str, output: Path | None) -> None:
    """Totals and unresolved entries, by pipeline, error class and subject.

    \b
    Examples:
        neuroflow-recover stats
        neuroflow-recover stats --format csv --output dead-letters.csv
    """
    from ..logsetup import get_logger
    from ..queue.stats import queue_stats
    from .render import render_stats

    db = obj.open_db(create=False, readonly=True)
    with db.sessions() as session:
        text = render_stats(queue_stats(session), fmt)
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise NeuroflowError(f"cannot write {output}: {exc}") from exc
    get_logger(__name__).info("statistics written", path=str(output))
