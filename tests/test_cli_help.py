"""`neuroflow-recover --help`: every command's summary uncut, the exit-code table, examples."""

from __future__ import annotations

from click.testing import CliRunner

from neuroflow_recover.cli import cli
from neuroflow_recover.errors import EXIT_CODE_HELP, ExitCode

COMMANDS = """\
Commands:
  classify   Print the error class of a failure log.
  exec       Run one attempt of a rule's tool (every rule's command).
  ingest     Queue the failed jobs of Snakemake main logs.
  list       List dead-letter entries, newest first.
  notify     Deliver pending notifications, or send a test.
  purge      Remove resolved entries older than the retention.
  resolve    Mark an entry resolved without a retry.
  resources  Requested vs used memory and runtime, per rule.
  retry      Re-run one entry's job; resolve it if it succeeds.
  retry-all  Retry every unresolved entry of a pipeline.
  run        Run the workflow; retry transient failures; queue the rest.
  show       Everything about one entry.
  stats      Queue statistics (table, CSV or JSON).
  status     Where every session stands, stage by stage.
"""

EXIT_STATUS = """\
  Exit status (the same outcome, the same status, for every command):
    0  done: every job succeeded, every entry asked for was resolved
    1  not done: a job failed or was dead-lettered, an entry stayed open, a
       retry was refused, or an error (bad input or config, no database,
       workflow locked)
    2  the command line is wrong
    3  exec only: the tool was not started (an earlier attempt's cause, an
       open circuit breaker, or a transient failure deferred to `run`);
       otherwise exec exits with the tool's own status
"""


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_summary_is_shown_uncut_and_the_exit_codes_are_listed():
    text = help_text()
    assert COMMANDS + "\n" + EXIT_STATUS in text
    commands = text[text.index("Commands:") : text.index("Exit status")]
    assert "..." not in commands  # click cuts a summary that does not fit


def test_the_exit_code_table_covers_every_status():
    assert set(EXIT_CODE_HELP) == set(ExitCode)


def test_every_command_has_examples():
    for name in cli.commands:
        text = help_text(name)
        assert "Examples" in text, name
        assert f"neuroflow-recover {name}" in text or "neuroflow-recover --configfile" in text


def test_a_usage_error_exits_2():
    result = CliRunner().invoke(cli, ["show"])
    assert result.exit_code == ExitCode.USAGE
    assert "Missing argument 'ENTRY_ID'" in result.output
