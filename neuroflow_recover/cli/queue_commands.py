"""Commands over the dead-letter queue: `ingest`, `list`, `show`, `resolve`, `stats`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ExitCode, NeuroflowError
from . import render
from .app import Context, cli, current_user, echo_json, exit_with, library_errors, write_output
from .options import format_option, json_option, output_option

# the choices of `status` (queue.status.STAGES / STATES, without importing SQLAlchemy here)
STATUS_STAGES = ("bids_conversion", "qsiprep", "qsirecon", "qsiparc")
STATUS_STATES = ("done", "failed", "running", "blocked", "pending")


def _in(directory: Path, path: str) -> Path:
    """A path of the config, relative to the workflow directory."""
    return Path(path) if Path(path).is_absolute() else directory / path


@cli.command("ingest", short_help="Queue the failed jobs of Snakemake main logs.")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--strict", is_flag=True,
    help="Exit 1 when a log, or a failure line in one, was not understood.",
)  # fmt: skip
@json_option
@click.pass_obj
@library_errors
def ingest_cmd(obj: Context, logs: tuple[Path, ...], strict: bool, as_json: bool) -> None:
    """Add the failed jobs of Snakemake main logs to the queue (default: every new main log
    under .snakemake/log); a job that succeeded in a later log resolves its entry.

    Reads Snakemake 8.x and 9.x main logs and console output (also pasted: indented,
    coloured, CRLF). Failure lines that became no entry are listed as not understood.

    \b
    Examples:
        neuroflow-recover ingest
        neuroflow-recover ingest .snakemake/log/2026-11-28T153204.406890.snakemake.log
        neuroflow-recover ingest --strict console.txt
    """
    from ..files import regular_file_problem
    from ..queue.ingest import ingest_logs
    from ..recover.outcomes import record_pending
    from ..workflow.invocation import Invocation
    from .render import render_ingest_report

    # a bad path (missing, a symlink loop, a directory, a FIFO, a device) is named at the
    # end; the other logs are ingested
    bad = {path: problem for path in logs if (problem := regular_file_problem(path))}
    named = "; ".join(f"{path}: {problem}" for path, problem in bad.items())
    if logs and len(bad) == len(logs):
        raise NeuroflowError(f"nothing ingested: {named}")
    cfg = obj.config_or_defaults()
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
    obj.aftercare(cfg, ingested=True, db=db)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(render_ingest_report(report))
    if bad:
        raise NeuroflowError(f"not ingested: {named} (the other logs were)")
    exit_with(ExitCode.FAILED if strict and not report.understood else ExitCode.OK)


@cli.command("ingest-live", hidden=True)
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jobs", required=True, help="Snakemake job ids failed for good (comma-separated).")
@click.option("--hold-transient", is_flag=True, help="Leave TransientError failures to `run`.")
@json_option
@click.pass_obj
@library_errors
def ingest_live_cmd(obj: Context, log: Path, jobs: str, hold_transient: bool, as_json: bool):
    """The logger plugin's: dead-letter jobs of a running Snakemake as they fail for good,
    and deliver the notification (the run's own end-of-run ingest reads the whole log).

    \b
    Examples:
        neuroflow-recover ingest-live .snakemake/log/2026-11-29T101500.000000.snakemake.log \\
          --jobs 12,17
    """
    from ..queue.ingest import IngestContext, ingest_live
    from .render import render_ingest_report

    try:
        jobids = [int(item) for item in jobs.split(",") if item.strip()]
    except ValueError:
        raise NeuroflowError(f"--jobs takes Snakemake job ids separated by commas, not {jobs!r}")
    hold = (lambda failure: failure.error_type == "TransientError") if hold_transient else None
    cfg = obj.config_or_defaults()
    db = obj.open_db()
    context = IngestContext.build(obj.directory, cfg, {"configfiles": list(obj.configfiles)})
    with db.sessions() as session, session.begin():
        result = ingest_live(session, context, log, jobids, hold=hold)
    obj.aftercare(cfg, ingested=False, db=db)
    if as_json:
        echo_json({"log": result.path, "status": result.status, "entry_ids": result.entry_ids})
    else:
        click.echo(render_ingest_report(_one(result)))


def _one(result):
    from ..queue.ingest import IngestReport

    return IngestReport([result])


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

    obj.catch_up()
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

    obj.catch_up()
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
@format_option("table", "csv", "json")
@output_option
@click.pass_obj
@library_errors
def stats_cmd(obj: Context, fmt: str, output: Path | None) -> None:
    """Totals and unresolved entries, by pipeline, error class and subject.

    \b
    Examples:
        neuroflow-recover stats
        neuroflow-recover stats --format csv --output dead-letters.csv
    """
    from ..queue.stats import queue_stats
    from .render import render_stats

    obj.catch_up()
    db = obj.open_db(create=False, readonly=True)
    with db.sessions() as session:
        text = render_stats(queue_stats(session), fmt)
    write_output(text, output)


@cli.command("status", short_help="Where every session stands, stage by stage.")
@click.option("--subject", default=None, help="Only this subject (label without sub-).")
@click.option(
    "--stage", "stages", multiple=True, type=click.Choice(STATUS_STAGES),
    help="Only this stage (repeatable).",
)  # fmt: skip
@click.option(
    "--state", "states", multiple=True, type=click.Choice(STATUS_STATES),
    help="Only rows in this state (repeatable).",
)  # fmt: skip
@format_option("table", "csv", "json", "html")
@output_option
@click.pass_obj
@library_errors
def status_cmd(obj: Context, subject, stages, states, fmt, output) -> None:
    """Every session of the sheet, every stage: done, failed (with its dead-letter entry),
    running, pending, or blocked by an upstream failure. Counts first, then the sessions.

    Computed from the outputs on disk, the queue and the step runner's markers, without
    building Snakemake's DAG. The HTML report is one self-contained file.

    \b
    Examples:
        neuroflow-recover status
        neuroflow-recover status --state failed --state blocked
        neuroflow-recover status --format csv --output status.csv
        neuroflow-recover status --format html --output status.html
    """
    from ..queue.status import build_board
    from ..workflow.sheet import load_sessions
    from . import render

    obj.catch_up()
    cfg = obj.config()
    sheet = load_sessions(_in(obj.directory, cfg["sessions"]))
    with obj.open_db_or_empty().sessions() as session:
        board = build_board(session, obj.directory, cfg, sheet, subject=subject)
    if subject is not None and not board.sessions:
        raise NeuroflowError(f"subject {subject!r} is not in the sessions sheet")
    if fmt == "html":
        from .status_html import render_status_html

        text = render_status_html(board, obj.command_line())
    elif fmt == "json":
        text = json.dumps(board.to_dict(), indent=2, sort_keys=True)
    elif fmt == "csv":
        text = render.render_status_csv(board, stages, states)
    else:
        text = render.render_status_table(board, stages, states)
    write_output(text, output)


@cli.command("notify", short_help="Deliver pending notifications, or send a test.")
@click.option("--test", "test", is_flag=True, help="Send a test message to every channel.")
@json_option
@click.pass_obj
@library_errors
def notify_cmd(obj: Context, test: bool, as_json: bool) -> None:
    """Deliver the notifications still pending (a channel was down), or with --test send a
    test message to every configured channel and say whether each accepted it.

    Exit status 0 when every channel accepted what it was sent, 1 otherwise.

    \b
    Examples:
        neuroflow-recover notify --test
        neuroflow-recover notify
    """
    from ..notify.deliver import test_message
    from ..queue.outbox import configured_channels

    cfg = obj.config()
    if not configured_channels(cfg):
        raise NeuroflowError(
            "no notification channel configured (error_handling.notifications: "
            "slack_webhook, email_recipients or apprise_urls)"
        )
    sent = test_message(cfg) if test else obj.aftercare(cfg, ingested=False)
    if as_json:
        echo_json([item.to_dict() for item in sent])
    else:
        click.echo(render.render_sent(sent, test))
    exit_with(ExitCode.FAILED if any(item.status == "failed" for item in sent) else ExitCode.OK)


@cli.command("purge", short_help="Remove resolved entries older than the retention.")
@click.option(
    "--older-than", "days", type=click.IntRange(min=0), default=None, metavar="DAYS",
    help="Resolved more than DAYS ago [default: error_handling.dead_letter.retention_days].",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print what would be removed, remove nothing.")
@json_option
@click.pass_obj
@library_errors
def purge_cmd(obj: Context, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Remove RESOLVED entries (with their history), delivered notifications and the
    attempt records of jobs that succeeded, older than the retention, and the work
    directories (QSIPrep, QSIRecon) of dead letters that failed before it. Unresolved
    entries are never removed.

    \b
    Examples:
        neuroflow-recover purge --dry-run
        neuroflow-recover purge --older-than 30
    """
    from ..queue.retention import layout_of, purge, retention_days

    cfg = obj.config_or_defaults()
    days = retention_days(cfg) if days is None else days
    with obj.open_db(create=False).sessions() as session:
        report = purge(session, obj.directory, days, dry_run, layout=layout_of(cfg))
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(render.render_purge(report))
