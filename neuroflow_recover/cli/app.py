"""The `neuroflow-recover` command group, its shared context and the exit-code table."""

from __future__ import annotations

import functools
import json
import os
import shlex
import textwrap
from pathlib import Path

import click

from .. import environment, logsetup
from ..errors import EXIT_CODE_HELP, ExitCode, NeuroflowError


def _exit_codes_epilog(width: int = 76) -> str:
    """The exit-code table, wrapped by hand (click must not re-flow it: `\\b`)."""
    lines = ["\b", "Exit status (the same outcome, the same status, for every command):"]
    for code, text in EXIT_CODE_HELP.items():
        lines += textwrap.wrap(
            text, width, initial_indent=f"  {int(code)}  ", subsequent_indent=" " * 5
        )
    return "\n".join(lines)


EXIT_CODES_EPILOG = _exit_codes_epilog()


class Context:
    """What every command needs: the workflow directory, the database, the config files."""

    def __init__(
        self,
        directory: Path,
        db: str | None,
        verbose: int,
        configfiles: tuple[str, ...],
        db_timeout: float | None = None,
    ):
        self.directory = directory
        self.db = db
        self.verbose = verbose
        # config files as Snakemake gets them (relative to the workflow directory);
        # empty = config/config.yaml
        self.configfiles = configfiles
        self.db_timeout = db_timeout  # None: env NEUROFLOW_DB_TIMEOUT or the default
        self.database = None  # the last database opened (named in database errors)

    def open_db(self, *, create: bool = True, readonly: bool = False):
        """The dead-letter database. Writers wait for its write lock (--db-timeout);
        commands that only read pass readonly=True; create=False never creates it."""
        from ..queue.database import open_database

        self.database = open_database(
            self.db, self.directory, create=create, readonly=readonly, timeout=self.db_timeout
        )
        return self.database

    def open_db_or_empty(self):
        """The dead-letter database, or an empty one in memory when there is no file yet."""
        from ..queue.database import database_url, open_database, sqlite_path

        path = sqlite_path(database_url(self.db, self.directory))
        if path is not None and not path.exists():
            return open_database("sqlite://", self.directory)
        return self.open_db(create=False, readonly=True)

    def config(self) -> dict:
        """The merged, validated workflow configuration."""
        from ..workflow.config import load_config

        return load_config(self.directory, self.configfiles)

    def catch_up(self) -> None:
        """Record what no command has recorded yet -- retry outcomes the database refused,
        main logs of a run killed before its end handler could ingest them -- what read and
        retry commands do first. Cheap when there
        is nothing new; a problem is a warning, never the command's failure."""
        from ..logs.locations import main_logs
        from ..queue.ingest import catch_up
        from ..recover.outcomes import pending_files, record_pending

        retries = pending_files(self.directory)
        if not retries and (not main_logs(self.directory) or not self._new_logs()):
            return
        try:
            cfg = self.config_or_defaults()
            db = self.open_db()
            with db.sessions() as session:
                record_pending(session, self.directory, cfg)  # before their logs close entries
                report = catch_up(session, self.directory, cfg)
        except NeuroflowError as exc:
            logsetup.get_logger(__name__).warning("new Snakemake logs not ingested", error=str(exc))
            return
        if report.logs:
            logsetup.get_logger(__name__).info(
                "ingested new Snakemake logs first",
                logs=[item.path for item in report.logs],
                entries=report.entry_ids,
            )
        self.aftercare(cfg, ingested=bool(report.logs), db=db)
        db.dispose()

    def _new_logs(self) -> bool:
        """Whether a main log waits to be ingested, asked as a reader (never waits for a
        writer: a read command waits for the write lock only when there is work)."""
        from ..queue.database import open_database
        from ..queue.ingest import logs_to_catch_up

        try:
            db = open_database(self.db, self.directory, create=False, readonly=True)
        except NeuroflowError:
            return True  # no queue yet, or unreadable: the writer finds out and says so
        try:
            with db.sessions() as session, session.begin():
                return bool(logs_to_catch_up(session, self.directory))
        finally:
            db.dispose()

    def aftercare(self, cfg: dict | None, *, ingested: bool, db=None):
        """After writing the queue: purge (auto_cleanup), breaker news, notifications."""
        from ..recover.aftercare import aftercare

        if db is None:
            try:
                db = self.open_db(create=False)
            except NeuroflowError:
                return []  # no queue yet: nothing to purge or to tell
        return aftercare(db, self.directory, cfg, self.command_line(), ingested=ingested)

    def command_line(self) -> str:
        """How this neuroflow-recover was called (global options), for commands we print."""
        words = ["neuroflow-recover"]
        if str(self.directory) != ".":
            words += ["-d", str(self.directory)]
        for name in self.configfiles:
            words += ["--configfile", name]
        return shlex.join(words)

    def config_or_defaults(self) -> dict:
        """The configuration; ``{}`` (shipped defaults) in another Snakemake workflow."""
        from ..workflow.config import config_or_defaults

        return config_or_defaults(self.directory, self.configfiles)


def library_errors(func):
    """Library errors become clean CLI errors: the message on stderr, the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NeuroflowError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = int(exc.exit_code)
            raise error from exc
        except Exception as exc:
            reason = _database_reason(exc, args[0] if args else None)
            if reason is None:
                raise
            error = click.ClickException(
                f"{reason}; the transaction in progress was rolled back (nothing of it was "
                "written)"
            )
            error.exit_code = int(ExitCode.FAILED)
            raise error from exc

    return wrapper


def _database_reason(exc: Exception, obj) -> str | None:
    """What a database failure that reached a command means (locked, disk full, ...)."""
    database = getattr(obj, "database", None)
    if database is None:
        return None
    from ..queue.database import describe_failure

    return describe_failure(exc, database.engine)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def write_output(text: str, output: Path | None) -> None:
    """A report to stdout, or to `output` (with a final newline)."""
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise NeuroflowError(f"cannot write {output}: {exc}") from exc
    logsetup.get_logger(__name__).info("report written", path=str(output))


def exit_with(status: int) -> None:
    """End the command with `status` (an ExitCode) unless it is 0."""
    if status:
        raise click.exceptions.Exit(int(status))


def current_user() -> str:
    import getpass

    return os.environ.get("USER") or getpass.getuser()


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_EPILOG,
)
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
    envvar=environment.DB,
    default=None,
    help="Dead-letter database: a file path (SQLite) or a URL, e.g. "
    "postgresql+psycopg://host/db for a queue shared between machines "
    "[default: DIRECTORY/.neuroflow/neuroflow.db; env NEUROFLOW_DB].",
)
@click.option(
    "--configfile",
    "configfiles",
    multiple=True,
    help="Workflow config file(s), as given to Snakemake [default: config/config.yaml].",
)
@click.option(
    "--db-timeout",
    type=click.FloatRange(min=0),
    envvar=environment.DB_TIMEOUT,
    default=None,
    metavar="SECONDS",
    help="How long a command that writes waits for another writer to finish "
    "[default: 60; env NEUROFLOW_DB_TIMEOUT].",
)
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-vv for debug).")
@click.version_option(package_name="neuroflow")
@click.pass_context
def cli(
    ctx: click.Context,
    directory: Path,
    db: str | None,
    configfiles: tuple[str, ...],
    db_timeout: float | None,
    verbose: int,
) -> None:
    """Classify failed Snakemake jobs, keep a dead-letter queue and re-run exactly what failed.

    Data goes to stdout, diagnostics to stderr. Read commands take --json.

    \b
    Examples:
        neuroflow-recover --configfile study.yaml run -- --cores 16
        neuroflow-recover list
        neuroflow-recover show 3
        neuroflow-recover retry 3
    """
    logsetup.configure(verbose)
    ctx.obj = Context(directory, db, verbose, configfiles, db_timeout)


def main() -> None:
    cli(prog_name="neuroflow-recover")
