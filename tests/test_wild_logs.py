"""Logs from the wild: real runs of plain Snakemake 8.x and 9.x (tests/fixtures/wild/, made by
tests/fixtures/make_wild_fixtures.py) in the forms users hand to `ingest` -- console output,
pasted, coloured, cut -- each with its expected entries (expected.json), through the CLI in a
directory without a neuroflow config."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import VENV_BIN, tool_env
from neuroflow_recover.cli import cli
from neuroflow_recover.logs.parser import parse_log

WILD = Path(__file__).parent / "fixtures" / "wild"
WORKFLOW = Path(__file__).parent / "fixtures" / "workflows" / "wild"
FIXTURES = sorted(p.name for p in WILD.iterdir() if (p / "expected.json").is_file())
CASES = [
    (name, index)
    for name in FIXTURES
    for index in range(len(json.loads((WILD / name / "expected.json").read_text())))
]
BAD_ALLOC = "terminate called after throwing an instance of 'std::bad_alloc'"
LICENSE = "ERROR: license file not found: /opt/aligner/license.txt"


def invoke(workdir: Path, *args: str):
    return CliRunner().invoke(cli, ["-d", str(workdir), *args], env={"NEUROFLOW_DB": None})


def copy(name: str, tmp_path: Path) -> Path:
    """The fixture as a workflow directory of another lab (no neuroflow config)."""
    work = tmp_path / name
    shutil.copytree(WILD / name, work)
    return work


def log_of(work: Path, pattern: str) -> Path:
    found = sorted(work.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def ingest(work: Path, log: Path, *options: str) -> tuple[dict, list[dict]]:
    """`ingest --json LOG` then `list --all --json`: (report, entries)."""
    result = invoke(work, "ingest", "--json", *options, str(log))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    listed = invoke(work, "list", "--all", "--json", "--limit", "100")
    assert listed.exit_code == 0, listed.output
    return report, json.loads(listed.stdout)


def table(entries: list[dict]) -> list[list]:
    return sorted(
        [e["job_key"], e["error_type"], e["resource"], e["attempts"]] for e in entries
    )


def show(work: Path, job_key: str, entries: list[dict]) -> dict:
    entry_id = next(e["id"] for e in entries if e["job_key"] == job_key)
    result = invoke(work, "show", str(entry_id), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------ the corpus


@pytest.mark.parametrize("name,index", CASES)
def test_corpus_gives_the_expected_entries(tmp_path, name, index):
    expected = json.loads((WILD / name / "expected.json").read_text())[index]
    work = copy(name, tmp_path)
    report, entries = ingest(work, log_of(work, expected["log"]))
    (logged,) = report["logs"]
    assert logged["status"] == "ingested"
    assert table(entries) == sorted(expected["entries"]), expected.get("note")
    assert len(logged["not_understood"]) == expected["not_understood"], logged["not_understood"]
    assert [r.split(" ")[0] for r in logged["recovered"]] == expected["recovered"]
    assert logged["failed_jobs"] == len(expected["entries"])


def test_every_fixture_folder_has_expectations():
    folders = sorted(p.name for p in WILD.iterdir() if p.is_dir())
    assert folders == FIXTURES
    assert {name.rsplit("-", 1)[1] for name in FIXTURES} == {"sm8", "sm9"}


# ------------------------------------------------------------------ what it must show


@pytest.mark.parametrize("version", ["sm8", "sm9"])
def test_two_failing_jobs_of_one_rule_and_a_rule_without_log(tmp_path, version):
    """A real run of each version: two jobs of `align` fail (no `log:`: their errors are on
    the console only) and `summarize` (no wildcards) fails: one entry each, right class."""
    work = copy(f"keep_going-{version}", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    assert table(entries) == [
        ["align/sample-A", "ResourceError", "memory", 1],
        ["align/sample-B", "ConfigurationError", None, 1],
        ["summarize/output=summary.txt", "ResourceError", "disk", 1],
    ]
    a, b = (show(work, f"align/sample-{s}", entries) for s in "AB")
    assert a["evidence"] == BAD_ALLOC and b["evidence"] == LICENSE
    assert a["targets"] == ["aligned/A.bam"] and b["targets"] == ["aligned/B.bam"]
    assert a["error_details"]["printed"] == BAD_ALLOC


def test_the_report_and_an_entry_in_full(tmp_path):
    """Every field `ingest --json` reports and an entry keeps (but its own times and keys)."""
    work = copy("keep_going-sm9", tmp_path)
    report, entries = ingest(work, work / "console.txt")
    run_id = "console@2026-11-29T195822"
    assert report == {"entry_ids": [1, 2, 3], "resolved_ids": [], "logs": [{
        "entry_ids": [1, 2, 3], "failed_jobs": 3, "message": "", "not_understood": [],
        "path": "console.txt", "recovered": [], "resolved_ids": [], "run_id": run_id,
        "status": "ingested"}]}
    entry = show(work, "align/sample-A", entries)
    [event] = entry.pop("history")
    assert entry.pop("failed_at") == event.pop("ended_at") == event.pop("started_at")  # the log's time
    assert event.pop("event_key").startswith("log:")
    for volatile in ("created_at", "updated_at", "error_message"):
        assert entry.pop(volatile)
    shell = entry["error_details"].pop("shell")
    assert shell.startswith("sleep 0; if [ A = A ]") and shell.endswith("echo aligned > aligned/A.bam")
    assert entry.pop("error_details") == {
        "command": ".venv/bin/snakemake -c1 --keep-going", "input": [], "log_files": [],
        "main_log": "console.txt", "main_log_line": 69, "output": ["aligned/A.bam"], "printed": BAD_ALLOC,
        "slurm_log": None, "snakemake_exit_code": 134, "submit_failed": False, "tail": []}
    assert entry == {
        "attempts": 1, "error_type": "ResourceError", "evidence": BAD_ALLOC, "exit_code": 134, "id": 1,
        "invocation": {"configfiles": [], "profile": None, "snakemake_args": ["-c1", "--keep-going"]},
        "job_key": "align/sample-A", "log_paths": ["console.txt"], "pattern_id": "cxx_bad_alloc",
        "pipeline": "align", "pipeline_run_id": 1, "resolution_notes": None, "resolved": False,
        "resolved_at": None, "resolved_by": None, "resource": "memory", "retryable": True, "rule": "align",
        "run_id": run_id, "session": None, "slurm_job_ids": [], "slurm_state": None, "subject": None,
        "targets": ["aligned/A.bam"], "wildcards": {"sample": "A"}}
    assert event == {
        "attempt": 1, "cpu_s": None, "elapsed_s": None, "error_type": "ResourceError", "evidence": BAD_ALLOC,
        "exit_code": 134, "host": None, "pattern_id": "cxx_bad_alloc", "peak_mem_mb": None,
        "resource": "memory", "resources": {"mem": "100 MB", "mem_mb": 100, "mem_mib": 96, "tmpdir": "/tmp"},
        "run_id": run_id, "slurm_job_id": None, "slurm_state": None, "source": "snakemake-log",
        "usage_source": None}


def test_a_cluster_jobs_slurm_id_and_a_line_not_understood_in_the_json_report(tmp_path):
    work = copy("cluster_group-sm9", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    assert show(work, "summarize/output=summary.txt", entries)["slurm_job_ids"] == ["19128"]
    quiet = copy("quiet_rules-sm9", tmp_path)
    report = json.loads(invoke(quiet, "ingest", "--json", str(quiet / "console.txt")).stdout)
    first = report["logs"][0]["not_understood"][0]
    assert (sorted(first), first["line"]) == (["line", "text", "why"], 34)
    assert first["text"].startswith("Command 'set -euo pipefail;")
    assert "an exception without an error block" in first["why"]


def test_error_blocks_without_job_blocks_are_not_merged(tmp_path):
    """Snakemake 8 with --quiet rules: error blocks, no job blocks, so no wildcards. The two
    failed `align` jobs stay two entries, each with its own output as identity and target."""
    work = copy("quiet_rules-sm8", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    keys = sorted(e["job_key"] for e in entries)
    assert keys == ["align/output=aligned/A.bam", "align/output=aligned/B.bam",
                    "summarize/output=summary.txt"]  # fmt: skip
    a = show(work, "align/output=aligned/A.bam", entries)
    b = show(work, "align/output=aligned/B.bam", entries)
    assert (a["targets"], b["targets"]) == (["aligned/A.bam"], ["aligned/B.bam"])
    assert "exit status 134" in a["error_message"] and "exit status 1." in b["error_message"]
    assert a["attempts"] == b["attempts"] == 1


def test_error_blocks_without_jobid(tmp_path):
    """An excerpt whose `jobid:` lines were trimmed: every error block is still a job of its
    own, matched to its job block by rule and output (wildcards kept)."""
    work = copy("pasted_excerpt-sm9", tmp_path)
    text = (work / "console.txt").read_text()
    assert "Error in rule" in text and "    jobid:" not in text
    run = parse_log(work / "console.txt")
    assert sorted((j.rule, j.wildcards.get("sample")) for j in run.failed_jobs) == [
        ("align", "A"), ("align", "B"), ("summarize", None)
    ]
    assert all(j.synthetic_jobid for j in run.failed_jobs)
    _, entries = ingest(work, work / "console.txt")
    assert len(entries) == 3
    assert [show(work, e["job_key"], entries)["pipeline_run_id"] for e in entries] == [None] * 3


@pytest.mark.parametrize("version", ["sm8", "sm9"])
def test_submission_failure_is_a_failure_of_the_job(tmp_path, version):
    """sbatch refused `align C` (a partition that does not exist): 8.x ends the run with a
    WorkflowError, 9.x prints an error block whose message spans lines. Either way the job
    gets the entry, with its target, ConfigurationError, and no SLURM job id."""
    work = copy(f"sbatch_partition-{version}", tmp_path)
    report, entries = ingest(work, work / "console.txt")
    assert report["logs"][0]["not_understood"] == []
    entry = show(work, "align/sample-C", entries)
    assert entry["error_type"] == "ConfigurationError"
    assert "Invalid partition name specified" in entry["evidence"]
    assert entry["targets"] == ["aligned/C.bam"]
    assert entry["slurm_job_ids"] == []
    assert entry["error_details"]["submit_failed"] is True
    run = parse_log(work / "console.txt")
    assert not [e for e in run.errors if "sbatch" in e]  # not left as a run error


@pytest.mark.parametrize("version", ["sm8", "sm9"])
def test_refusal_that_passes_is_transient(tmp_path, version):
    work = copy(f"sbatch_inactive-{version}", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    entry = show(work, "align/sample-C", entries)
    assert (entry["error_type"], entry["retryable"]) == ("TransientError", True)
    assert "Required partition not available" in entry["evidence"]


@pytest.mark.parametrize("version", ["sm8", "sm9"])
def test_a_failed_group_fails_each_of_its_jobs(tmp_path, version):
    """A group job (three `align` jobs) fails as a whole: each job is an entry of its own,
    with its wildcards (from the indented job blocks) and its output as target."""
    work = copy(f"cluster_group-{version}", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    for sample in "ABC":
        entry = show(work, f"align/sample-{sample}", entries)
        assert entry["error_message"].startswith("Error in group g1")
        assert entry["targets"] == [f"aligned/{sample}.bam"]
        assert entry["wildcards"] == {"sample": sample}


@pytest.mark.parametrize("form", ["pasted_indented", "pasted_quoted", "pasted_pager_cut"])
def test_pasted_forms_read_like_the_console(tmp_path, form):
    """Indented by four spaces (Markdown), quoted (`> `), cut by `less -S`: the same jobs and
    classes as the console output they came from."""
    original = copy("keep_going-sm9", tmp_path)
    _, want = ingest(original, original / "console.txt")
    work = copy(f"{form}-sm9", tmp_path)
    _, got = ingest(work, work / "console.txt")
    assert table(got) == table(want)


def test_terminal_output_with_colour_codes_and_crlf(tmp_path):
    work = copy("terminal-sm9", tmp_path)
    raw = (work / "console-terminal.txt").read_bytes()
    assert b"\x1b[" in raw and b"\r\n" in raw
    run = parse_log(work / "console-terminal.txt")
    assert any("colour codes removed" in w for w in run.warnings)
    _, entries = ingest(work, work / "console-terminal.txt")
    assert len(entries) == 3


def test_evidence_of_parallel_jobs_goes_to_the_job_that_printed_it(tmp_path):
    """`align B` started before `align A` and failed 2 s after it: A's line, printed while
    both ran, precedes A's exception; B's line comes after A failed."""
    work = copy("parallel-sm9", tmp_path)
    _, entries = ingest(work, work / "console.txt")
    a, b = (show(work, f"align/sample-{s}", entries) for s in "AB")
    assert a["error_details"]["printed"] == BAD_ALLOC
    assert b["error_details"]["printed"] == LICENSE


def test_the_main_log_file_lacks_what_the_console_shows(tmp_path):
    """What `ingest` cannot know: the main log file has no tool stderr, so rules without
    `log:` are classified by their exit status only."""
    work = copy("keep_going-sm9", tmp_path)
    _, entries = ingest(work, log_of(work, "*.snakemake.log"))
    a = show(work, "align/sample-A", entries)
    assert (a["error_type"], a["error_details"]["printed"]) == ("RetryableError", None)


# ------------------------------------------------------------------ not understood, --strict


def test_lines_not_understood_are_named_and_strict_exits_1(tmp_path):
    """Snakemake 9 with --quiet rules prints no error blocks: three RuleExceptions name no
    rule. No entry can be made; ingest names each line, and --strict exits 1."""
    work = copy("quiet_rules-sm9", tmp_path)
    text = invoke(work, "ingest", str(work / "console.txt"))
    assert text.exit_code == 0, text.output
    listed = [line for line in text.stdout.splitlines() if "not understood" in line]
    assert len(listed) == 3
    assert listed[0].startswith("  not understood: line 34: Command 'set -euo pipefail;")
    assert "an exception without an error block" in listed[0]
    again = copy("quiet_rules-sm9", tmp_path / "again")
    strict = invoke(again, "ingest", "--strict", str(again / "console.txt"))
    assert strict.exit_code == 1
    assert strict.stdout.count("not understood") == 3
    fine = copy("keep_going-sm9", tmp_path)
    assert invoke(fine, "ingest", "--strict", str(fine / "console.txt")).exit_code == 0


def test_strict_fails_on_a_file_that_is_not_a_log(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing about Snakemake here\n" * 300)
    result = invoke(tmp_path, "ingest", "--strict", str(tmp_path / "notes.txt"))
    assert result.exit_code == 1
    assert "unreadable" in result.stdout


# ------------------------------------------------------------------ another lab's workflow


def test_read_commands_and_classify_without_a_neuroflow_config(tmp_path):
    """A workflow directory with its own config/config.yaml (not neuroflow's)."""
    work = copy("keep_going-sm9", tmp_path)
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text("samples: [A, B, C]\nthreads: 4\n")
    _, entries = ingest(work, work / "console.txt")
    assert {e["pipeline"] for e in entries} == {"align", "summarize"}
    listed = invoke(work, "list").stdout.splitlines()
    assert listed[0].split()[:6] == ["ID", "PIPELINE", "SUBJECT", "SESSION", "RULE", "JOB"]
    assert sorted(line.split()[4:6] for line in listed[1:]) == [
        ["align", "sample-A"], ["align", "sample-B"], ["summarize", "output=summary.txt"]
    ]
    stats = invoke(work, "stats", "--format", "json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["total"] == 3
    classified = invoke(work, "classify", "--json", str(work / "logs" / "summarize.log"))
    assert json.loads(classified.stdout)["error_class"] == "ResourceError"


@pytest.mark.workflow
def test_retry_in_another_snakemake_workflow(tmp_path):
    """A plain Snakemake 9 run of the wild workflow, ingested; the cause fixed; `retry` re-runs
    the job with the run's own options (from its log) and resolves the entry."""
    work = tmp_path / "lab"
    shutil.copytree(WORKFLOW, work)
    run = subprocess.run(
        [str(VENV_BIN / "snakemake"), "-c1", "--keep-going"],
        cwd=work, env=tool_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode != 0
    (work / "console.txt").write_text(run.stderr)
    _, entries = ingest(work, work / "console.txt")
    entry = next(e for e in entries if e["job_key"] == "summarize/output=summary.txt")
    dry = invoke(work, "retry", str(entry["id"]), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "-c1 --keep-going -- summary.txt" in dry.stdout
    snakefile = work / "Snakefile"
    snakefile.write_text(
        snakefile.read_text().replace(
            "echo 'OSError: [Errno 28] No space left on device' > {log}; exit 1",
            "echo summarized > {output}",
        )
    )
    retried = invoke(work, "retry", str(entry["id"]))
    assert retried.exit_code == 0, retried.output
    assert (work / "summary.txt").read_text() == "summarized\n"
    assert show(work, "summarize/output=summary.txt", entries)["resolved_by"] == "retry"


# ------------------------------------------------------------------ failure lines out of context


def altered(tmp_path: Path, name: str, change) -> Path:
    """A real console output with one change (what a partial or edited paste does)."""
    path = tmp_path / f"{name}.txt"
    path.write_text(change((WILD / "keep_going-sm9" / "console.txt").read_text()))
    return path


def test_a_restart_of_a_job_that_never_failed_is_not_understood(tmp_path):
    path = altered(tmp_path, "restart", lambda t: t.replace(
        "Exiting because", "Trying to restart job 99.\nExiting because", 1))
    run = parse_log(path)
    (item,) = run.not_understood
    assert item.text == "Trying to restart job 99." and "no failure" in item.why
    assert item.line == path.read_text().splitlines().index("Trying to restart job 99.") + 1


def test_an_error_header_cut_by_a_pager_still_finds_its_job_by_jobid(tmp_path):
    path = altered(tmp_path, "cut", lambda t: t.replace(
        "Error in rule summarize:", "Error in rule summ>", 1))
    run = parse_log(path)
    assert sorted(j.rule for j in run.failed_jobs) == ["align", "align", "summarize"]
    assert run.not_understood == []


def test_an_error_block_of_an_unknown_job_without_a_rule_is_not_understood(tmp_path):
    path = altered(tmp_path, "unknown", lambda t: t.replace(
        "Error in rule summarize:\n    message: None\n    jobid: 4",
        "Error in rule summ>\n    message: None\n    jobid: 77", 1))
    run = parse_log(path)
    assert sorted(j.rule for j in run.failed_jobs) == ["align", "align"]
    assert [n.text for n in run.not_understood] == ["Error in rule summ>"]


def test_a_slurm_failure_line_of_an_unknown_job_is_not_understood(tmp_path):
    line = "SLURM-job '4711' failed, SLURM status is: 'NODE_FAIL'."
    path = altered(tmp_path, "slurm", lambda t: t.replace(
        "Exiting because", f"{line}\nExiting because", 1))
    run = parse_log(path)
    assert [(n.text, n.why) for n in run.not_understood] == [
        (line, "no job was submitted as SLURM job 4711")
    ]


def test_console_outputs_of_two_runs_are_two_runs_and_one_run_is_one(tmp_path):
    """Two runs' `console.txt` (the same name) are two failures of each job; a 9.x run's main
    log and its console output are one run (its Workflow ID), so nothing is counted twice."""
    work = copy("keep_going-sm9", tmp_path)
    (work / "other").mkdir()
    shutil.copy2(WILD / "parallel-sm9" / "console.txt", work / "other" / "console.txt")
    ingest(work, work / "console.txt")
    report, entries = ingest(work, work / "other" / "console.txt")
    assert report["logs"][0]["run_id"] != "console"
    assert {e["job_key"]: e["attempts"] for e in entries}["align/sample-A"] == 2
    single = copy("keep_going-sm9", tmp_path / "single")
    ingest(single, log_of(single, "*.snakemake.log"))
    _, entries = ingest(single, single / "console.txt")
    assert {e["attempts"] for e in entries} == {1}


def test_attempts_of_earlier_rounds_go_first_and_one_in_both_is_kept_once():
    from types import SimpleNamespace

    from neuroflow_recover.queue.ingest import _put_carried_first

    def events(*keys):
        return [SimpleNamespace(event_key=key) for key in keys]

    failure = SimpleNamespace(events=events("b", "c"))
    _put_carried_first(failure, [])
    assert [e.event_key for e in failure.events] == ["b", "c"]
    _put_carried_first(failure, events("a", "b"))  # round 1's attempts a and b; b is also in this run
    assert [e.event_key for e in failure.events] == ["a", "b", "c"]


def test_the_last_attempt_record_that_ran_the_tool_classifies_a_job(tmp_path):
    from types import SimpleNamespace

    from neuroflow_recover.classify.classifier import Classifier
    from neuroflow_recover.queue.ingest import _classification
    from neuroflow_recover.step.attempts import AttemptRecord

    def record(attempt, error_class, skipped=False):
        return AttemptRecord(
            rule="align", stage="align", wildcards={}, attempt=attempt, started_at="", ended_at="",
            exit_code=attempt, error_class=error_class, retryable=True, resource=None, pattern_id="p",
            evidence=f"evidence {attempt}", skipped=skipped)

    job = SimpleNamespace(attempts=2, rule="align", exit_code=9, slurm_state=None, message="")
    context = SimpleNamespace(classifier=Classifier(), workdir=tmp_path)
    found, exit_code = _classification(context, job, [record(1, "TransientError"),
                                                      record(2, "ConfigurationError", skipped=True)])
    assert (found.error_class, found.evidence, exit_code) == ("TransientError", "evidence 1", 1)


def test_a_run_without_a_readable_command_line_keeps_the_callers_invocation():
    from types import SimpleNamespace

    from neuroflow_recover.queue.ingest import _invocation

    callers = {"configfiles": ["study.yaml"], "profile": None, "snakemake_args": []}
    for command in (None, "", "snakemake --config 'unbalanced"):
        assert _invocation(SimpleNamespace(command=command), callers) == callers
