"""The dead-letter commands through click's CliRunner: exact exit codes and output (the
tests over the `workdir` queue on SQLite and on PostgreSQL)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import VENV_BIN
from neuroflow_recover.cli import cli
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import AttemptEvent, JobFailure, dead_letter, get_entry

WHEN_1 = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
WHEN_2 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _failure(rule, pipeline, subject, session, error_type, retryable, when, keys, **extra):
    wildcards = {"subject": subject} | ({"session": session} if session else {})
    return JobFailure(
        rule=rule,
        wildcards=wildcards,
        pipeline_name=pipeline,
        error_type=error_type,
        retryable=retryable,
        error_message=extra.get("message", "CalledProcessError: non-zero exit status 1."),
        events=[
            AttemptEvent(
                event_key=key,
                source="attempt-record",
                run_id="2026-03-01T123000.000001",
                started_at=when,
                exit_code=extra.get("exit_code", 1),
                error_type=error_type,
                resource=extra.get("resource"),
                evidence=extra.get("evidence"),
                resources={"mem_mb": 2000 * (n + 1), "runtime": 30},
                host="node7",
            )
            for n, key in enumerate(keys)
        ],
        evidence=extra.get("evidence"),
        pattern_id=extra.get("pattern_id"),
        resource=extra.get("resource"),
        exit_code=extra.get("exit_code", 1),
        jobid=4,
        run_id="2026-03-01T123000.000001",
        failed_at=when,
        targets=extra.get("targets", []),
        log_paths=extra.get("log_paths", []),
        slurm_job_ids=extra.get("slurm_job_ids", []),
        invocation={"configfiles": [], "profile": None, "snakemake_args": ["--cores", "2"]},
        error_details={"output": extra.get("targets", [])[:1]},
    )


DB_URL_FILE = ".test-db-url"  # the backend's --db for `invoke` in this directory


@pytest.fixture
def workdir(tmp_path, backend) -> Path:
    """A workflow directory with a config and a queue of two entries (IDs 1 and 2), on each
    backend (`invoke` passes the backend's database)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("{}\n")
    if backend.pg_url:
        (tmp_path / DB_URL_FILE).write_text(backend.pg_url)
    db = open_database(backend.url(), tmp_path)
    with db.sessions.begin() as session:
        first = dead_letter(
            session,
            _failure(
                "qsiparc_parcellate",
                "qsiparc",
                "01",
                "1",
                "ResourceError",
                True,
                WHEN_1,
                ["rec:a", "rec:b"],
                resource="memory",
                exit_code=137,
                evidence="MemoryError",
                pattern_id="python_memoryerror",
                targets=["results/qsiparc/sub-01/ses-1/done.txt"],
                log_paths=["logs/qsiparc/01_1.log"],
                slurm_job_ids=["881", "882"],
            ),
        )
        second = dead_letter(
            session,
            _failure(
                "heudiconv_convert",
                "bids_conversion",
                "02",
                "1",
                "ValidationError",
                False,
                WHEN_2,
                ["rec:c"],
                evidence="Error: Unable to find any DICOM images in dicom/02 (or subfolders 5 deep)",
                pattern_id="dcm2niix_no_dicom",
                exit_code=2,
                targets=["results/bids/sub-02/ses-1/.done"],
            ),
        )
        first.created_at, second.created_at = WHEN_1, WHEN_2
    db.dispose()
    return tmp_path


def _db_url(workdir: Path) -> str | None:
    path = Path(workdir) / DB_URL_FILE
    return path.read_text() if path.is_file() else None


def invoke(workdir: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(
        cli, ["-d", str(workdir), *args], env={"NEUROFLOW_DB": _db_url(workdir), **(env or {})}
    )


LIST_TABLE = """\
ID  PIPELINE         SUBJECT  SESSION  RULE                ERROR CLASS      RESOURCE  ATTEMPTS  FAILED AT (UTC)
2   bids_conversion  02       1        heudiconv_convert   ValidationError  -         1         2026-03-02 08:00
1   qsiparc          01       1        qsiparc_parcellate  ResourceError    memory    2         2026-03-01 12:30
"""


def test_list_table_newest_first(workdir):
    result = invoke(workdir, "list")
    assert result.exit_code == 0, result.output
    assert result.stdout == LIST_TABLE


def test_list_filters_limit_all_and_json(workdir):
    only = invoke(workdir, "list", "--pipeline", "qsiparc", "--json")
    assert only.exit_code == 0
    data = json.loads(only.stdout)
    assert [(e["id"], e["pipeline"], e["attempts"]) for e in data] == [(1, "qsiparc", 2)]
    assert json.loads(invoke(workdir, "list", "--limit", "1", "--json").stdout)[0]["id"] == 2
    assert invoke(workdir, "resolve", "2").exit_code == 0
    assert [e["id"] for e in json.loads(invoke(workdir, "list", "--json").stdout)] == [1]
    everything = invoke(workdir, "list", "--all")
    assert everything.stdout.splitlines()[0].endswith("FAILED AT (UTC)   RESOLVED")
    assert [line.split()[0] for line in everything.stdout.splitlines()[1:]] == ["2", "1"]
    assert everything.stdout.splitlines()[1].endswith("yes")
    assert invoke(workdir, "list", "--pipeline", "qsiprep").stdout == (
        "no unresolved dead-letter entries\n"
    )


def test_show_everything(workdir):
    result = invoke(workdir, "show", "1")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "Dead-letter entry 1  [unresolved]"
    for expected in (
        "  pipeline:     qsiparc",
        "  rule:         qsiparc_parcellate",
        "  wildcards:    session=1, subject=01",
        "  error class:  ResourceError",
        "  resource:     memory",
        "  pattern:      python_memoryerror",
        "  exit code:    137",
        "  SLURM jobs:   881, 882",
        "  attempts:     2",
        "  evidence:     MemoryError",
        "    results/qsiparc/sub-01/ses-1/done.txt",
        "    logs/qsiparc/01_1.log",
        "    #1  2026-03-01T12:30:00+00:00  run 2026-03-01T123000.000001  exit 137  ResourceError"
        " (memory)  [attempt-record]",
        "        resources: mem_mb=2000, runtime=30",
        "        resources: mem_mb=4000, runtime=30",
        "        host:      node7",
    ):
        assert expected in lines, expected
    second = invoke(workdir, "show", "2")
    assert (
        "  error class:  ValidationError  (not retryable: `retry` needs a changed input or "
        "configuration, or --force)" in second.stdout
    )
    data = json.loads(invoke(workdir, "show", "1", "--json").stdout)
    assert data["targets"] == ["results/qsiparc/sub-01/ses-1/done.txt"]
    assert [h["attempt"] for h in data["history"]] == [1, 2]
    assert data["invocation"]["snakemake_args"] == ["--cores", "2"]


def test_unknown_ids_change_nothing(workdir):
    db_file = workdir / ".neuroflow" / "neuroflow.db"
    before = invoke(workdir, "list", "--all", "--json").stdout
    for args in (["show", "42"], ["resolve", "42"], ["retry", "42"], ["retry", "42", "--dry-run"]):
        result = invoke(workdir, *args)
        assert result.exit_code == 1, args
        assert result.stderr == "Error: no dead-letter entry with ID 42\n", args
        assert result.stdout == ""
    assert invoke(workdir, "list", "--all", "--json").stdout == before
    assert db_file.exists() or _db_url(workdir)


def test_read_only_commands_on_a_missing_database(tmp_path):
    for args in (["list"], ["show", "1"], ["stats"], ["resolve", "1"]):
        result = invoke(tmp_path, *args)
        assert result.exit_code == 1, args
        assert result.stderr == (
            f"Error: no dead-letter database at {tmp_path / '.neuroflow' / 'neuroflow.db'} "
            "(run `neuroflow-recover ingest` or `run` first)\n"
        )
    assert not (tmp_path / ".neuroflow").exists()


def test_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 500)
    result = invoke(tmp_path, "--db", str(junk), "list")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {junk} is not a usable dead-letter database")
    assert "Traceback" not in result.output


def test_resolve_records_the_user_and_notes(workdir):
    result = invoke(
        workdir, "resolve", "1", "--notes", "re-acquired the scan", env={"USER": "dana"}
    )
    assert result.exit_code == 0
    assert result.stdout == "dead-letter entry 1 resolved\n"
    db = open_database(_db_url(workdir), workdir, create=False)
    with db.sessions() as session:
        entry = get_entry(session, 1)
        assert (entry.resolved, entry.resolved_by) == (True, "dana")
        assert entry.resolution_notes == "re-acquired the scan"
    db.dispose()
    again = invoke(workdir, "resolve", "1")
    assert again.exit_code == 1
    assert again.stderr.startswith("Error: dead-letter entry 1 is already resolved (by dana at ")


STATS_TABLE = """\
Dead-letter queue
  total entries: 2
  unresolved:    2
  resolved:      0

By pipeline (unresolved / total):
  bids_conversion  1 / 1
  qsiparc          1 / 1

By error class (unresolved / total):
  ResourceError    1 / 1
  ValidationError  1 / 1

By subject (unresolved / total):
  01  1 / 1
  02  1 / 1
"""

STATS_CSV = """\
group,key,total,unresolved
all,all,2,2
pipeline,bids_conversion,1,1
pipeline,qsiparc,1,1
error_type,ResourceError,1,1
error_type,ValidationError,1,1
subject,01,1,1
subject,02,1,1
"""


def test_stats_formats_and_output_file(workdir, tmp_path):
    assert invoke(workdir, "stats").stdout == STATS_TABLE
    csv = invoke(workdir, "stats", "--format", "csv")
    assert csv.exit_code == 0 and csv.stdout == STATS_CSV
    frame = pd.read_csv(io.StringIO(csv.stdout), dtype={"key": str})
    assert frame.loc[frame.group == "subject", "key"].tolist() == ["01", "02"]
    data = json.loads(invoke(workdir, "stats", "--format", "json").stdout)
    assert data["by_error_type"]["ValidationError"] == {"total": 1, "unresolved": 1}
    out = tmp_path / "stats.csv"
    written = invoke(workdir, "stats", "--format", "csv", "--output", str(out))
    assert written.exit_code == 0 and written.stdout == ""
    assert out.read_text() == STATS_CSV
    bad = invoke(workdir, "stats", "--format", "xml")
    assert bad.exit_code == 2 and "Invalid value for '--format'" in bad.stderr


def test_dry_run_prints_the_exact_command_and_targets_and_changes_nothing(workdir):
    db_file = workdir / ".neuroflow" / "neuroflow.db"
    before = (invoke(workdir, "list", "--all", "--json").stdout,
              db_file.read_bytes() if db_file.exists() else None)  # PostgreSQL: no file
    snakemake = VENV_BIN / "snakemake"
    # entry 2 is a ValidationError of March; config/config.yaml was written after it
    dry = invoke(workdir, "retry", "2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == (
        f"entry 2: would run: {snakemake} --cores 2 -- results/bids/sub-02/ses-1/.done\n"
        "  targets:\n"
        "    results/bids/sub-02/ses-1/.done\n"
    )
    payload = json.loads(invoke(workdir, "retry", "1", "--dry-run", "--json").stdout)
    assert payload["dry_run"] is True and payload["resolved"] == []
    assert payload["command"] == f"{snakemake} --cores 2 -- results/qsiparc/sub-01/ses-1/done.txt"
    assert payload["targets"] == ["results/qsiparc/sub-01/ses-1/done.txt"]
    both = invoke(workdir, "retry-all", "--pipeline", "qsiparc", "--dry-run")
    assert both.exit_code == 0, both.output
    assert both.stdout == (
        f"entry 1: would run: {snakemake} --cores 2 -- results/qsiparc/sub-01/ses-1/done.txt\n"
        "  targets:\n"
        "    results/qsiparc/sub-01/ses-1/done.txt\n"
    )
    assert not (workdir / ".snakemake").exists()  # Snakemake never ran
    after = (invoke(workdir, "list", "--all", "--json").stdout,
              db_file.read_bytes() if db_file.exists() else None)  # PostgreSQL: no file
    assert after == before


@pytest.fixture
def fresh(tmp_path) -> tuple[Path, int, datetime]:
    """A ValidationError that failed just now; its job read the folder dicom/02 (real files)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("sessions: sessions.tsv\n")
    (tmp_path / "sessions.tsv").write_text("participant_id\tsession_id\tdicom_dir\n")
    dicom = tmp_path / "dicom" / "02" / "series1"
    dicom.mkdir(parents=True)
    (dicom / "0001.dcm").write_bytes(b"truncated, not a DICOM file\n")
    (tmp_path / "heuristic.py").write_text("# heuristic\n")
    failed = datetime.now(UTC)  # after every file above was written
    failure = _failure(
        "heudiconv_convert", "bids_conversion", "02", "1", "ValidationError", False, failed,
        ["rec:fresh"], evidence="Error: Unable to find any DICOM images in dicom/02",
        targets=["results/bids/sub-02/ses-1/.done"],
    )  # fmt: skip
    failure.error_details["input"] = ["dicom/02", "heuristic.py"]
    db = open_database(None, tmp_path)
    with db.sessions.begin() as session:
        entry_id = dead_letter(session, failure).id
    db.dispose()
    return tmp_path, entry_id, failed


def test_non_retryable_retry_is_refused_while_nothing_it_depends_on_changed(fresh):
    root, entry_id, failed = fresh
    db_file = root / ".neuroflow" / "neuroflow.db"
    before = (invoke(root, "list", "--all", "--json").stdout, db_file.read_bytes())
    why = (
        f"entry {entry_id} failed with ValidationError (not retryable) and neither its inputs "
        f"nor the configuration changed since {failed:%Y-%m-%d %H:%M:%S} UTC; fix the cause "
        "and retry, or use --force"
    )
    for args in (["retry", str(entry_id)], ["retry", str(entry_id), "--dry-run"]):
        refused = invoke(root, *args)
        assert refused.exit_code == 1, args
        assert refused.stderr == f"Error: {why}\n", args
        assert refused.stdout == ""
    skipped = invoke(root, "retry-all", "--pipeline", "bids_conversion", "--dry-run")
    assert skipped.exit_code == 1, skipped.output  # refused, as by `retry`: not done
    assert (
        skipped.stdout
        == f"  entry {entry_id}: skipped, {why.removeprefix(f'entry {entry_id} ')}\n"
    )
    forced = invoke(root, "retry", str(entry_id), "--force", "--dry-run")
    assert forced.exit_code == 0 and "would run: " in forced.stdout
    assert not (root / ".snakemake").exists()
    assert (invoke(root, "list", "--all", "--json").stdout, db_file.read_bytes()) == before


@pytest.mark.parametrize(
    "change",
    ["replace a file in the input folder", "add a file deep in the input folder",
     "edit an input file", "edit the config", "edit the sessions sheet"],
)  # fmt: skip
def test_non_retryable_retry_runs_once_an_input_or_the_configuration_changed(fresh, change):
    root, entry_id, _ = fresh
    assert invoke(root, "retry", str(entry_id), "--dry-run").exit_code == 1
    if change == "replace a file in the input folder":
        (root / "dicom/02/series1/0001.dcm").unlink()
        (root / "dicom/02/series1/0001.dcm").write_bytes(b"DICM" * 64)
    elif change == "add a file deep in the input folder":
        (root / "dicom/02/series1/0002.dcm").write_bytes(b"DICM" * 64)
    elif change == "edit an input file":
        (root / "heuristic.py").write_text("# heuristic, fixed\n")
    elif change == "edit the config":
        (root / "config" / "config.yaml").write_text("sessions: sessions.tsv  # fixed\n")
    else:
        (root / "sessions.tsv").write_text("participant_id\tsession_id\tdicom_dir\n02\t1\td\n")
    allowed = invoke(root, "retry", str(entry_id), "--dry-run")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout == (
        f"entry {entry_id}: would run: {VENV_BIN / 'snakemake'} --cores 2 -- "
        "results/bids/sub-02/ses-1/.done\n"
        "  targets:\n"
        "    results/bids/sub-02/ses-1/.done\n"
    )


def test_retry_all_with_nothing_to_do(workdir):
    result = invoke(workdir, "retry-all", "--pipeline", "qsiprep")
    assert result.exit_code == 0
    assert result.stdout == "no unresolved entries for qsiprep\n"


def test_ingest_paths_and_messages(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("{}\n")
    missing = invoke(tmp_path, "ingest", "nowhere.snakemake.log")
    assert missing.exit_code == 1
    assert missing.stderr == "Error: nothing ingested: nowhere.snakemake.log: no such file\n"
    assert not (tmp_path / ".neuroflow").exists()
    nothing = invoke(tmp_path, "ingest")
    assert nothing.exit_code == 0
    assert nothing.stdout == "no new Snakemake logs to ingest\n"
    junk = tmp_path / "junk.snakemake.log"
    junk.write_bytes(bytes(range(256)) * 40)
    result = invoke(tmp_path, "ingest", str(junk), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [log["status"] for log in report["logs"]] == ["unreadable"]
    assert report["entry_ids"] == []
    assert json.loads(invoke(tmp_path, "list", "--all", "--json").stdout) == []


def test_run_without_a_configuration_is_a_clear_error(tmp_path):
    result = invoke(tmp_path, "run", "--", "--cores", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no configuration: ")
    assert "Traceback" not in result.output
