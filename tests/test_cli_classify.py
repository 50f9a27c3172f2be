"""`neuroflow-recover classify`: exact output and exit codes (click CliRunner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroflow_recover.cli import cli

OOM_LINE = "slurmstepd: error: Detected 2 oom-kill event(s) in StepId=2858515.batch cgroup."


@pytest.fixture
def run(tmp_path):
    """Invoke the CLI with an empty workflow directory (no config/config.yaml)."""

    def invoke(*args, input=None):
        runner = CliRunner()
        return runner.invoke(cli, ["-d", str(tmp_path), "classify", *args], input=input)

    return invoke


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def test_plain_output_is_the_class_name(run, tmp_path):
    log = write(tmp_path, "job.log", f"starting\n{OOM_LINE}\n")
    result = run(log)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ResourceError\n"


def test_json_output(run, tmp_path):
    log = write(tmp_path, "job.log", f"starting\n  {OOM_LINE}  \n")
    result = run("--json", log)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "error_class": "ResourceError",
        "retryable": True,
        "resource": "memory",
        "pattern_id": "slurm_oom_kill_event",
        "evidence": OOM_LINE,
    }


def test_stdin(run):
    result = run("-", input="ERROR: FreeSurfer license file /opt/freesurfer/license.txt not found.\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ConfigurationError\n"


def test_exit_code_and_slurm_state_options(run, tmp_path):
    log = write(tmp_path, "quiet.log", "nothing recognisable here\n")
    assert run(log).stdout == "RetryableError\n"
    assert run("--exit-code", "137", log).stdout == "ResourceError\n"
    assert run("--exit-code", "1", log).stdout == "NonRetryableError\n"
    result = run("--slurm-state", "TIMEOUT", "--json", log)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "error_class": "ResourceError",
        "retryable": True,
        "resource": "runtime",
        "pattern_id": "slurm:TIMEOUT",
        "evidence": "SLURM state: TIMEOUT",
    }
    assert run("--slurm-state", "NODE_FAIL", log).stdout == "TransientError\n"


def test_non_utf8_input_is_decoded_with_replacement(run, tmp_path):
    log = write(tmp_path, "binary.log", b"\xff\xfe\x00\x80 junk\nOSError: [Errno 28] No space left on device\n\xc3\x28\n")
    result = run("--json", log)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["error_class"], data["resource"]) == ("ResourceError", "disk")
    assert run("-", input=b"\xff\xfe\x80").stdout == "RetryableError\n"


def test_empty_input(run, tmp_path):
    assert run(write(tmp_path, "empty.log", "")).stdout == "RetryableError\n"


def test_missing_file_is_a_clean_error(run, tmp_path):
    result = run(str(tmp_path / "nope.log"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "cannot read" in result.stderr and "nope.log" in result.stderr
    assert "Traceback" not in result.output


def test_directory_is_a_clean_error(run, tmp_path):
    result = run(str(tmp_path))
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_missing_argument_is_a_usage_error(run):
    result = run()
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


def test_user_patterns_from_the_workflow_config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "error_handling:\n"
        "  patterns:\n"
        '    - {id: site_quota, pattern: "quota exceeded on /scratch", class: ResourceError, resource: disk}\n'
    )
    log = write(tmp_path, "job.log", "lfs: quota exceeded on /scratch/u123\n")
    result = CliRunner().invoke(cli, ["-d", str(tmp_path), "classify", "--json", log])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pattern_id"] == "site_quota"


def test_bad_user_pattern_in_configfile_is_a_clean_error(tmp_path):
    (tmp_path / "site.yaml").write_text(
        "error_handling:\n  patterns:\n    - {id: broken_site, pattern: '([', class: ResourceError}\n"
    )
    log = write(tmp_path, "job.log", "Killed\n")
    result = CliRunner().invoke(cli, ["-d", str(tmp_path), "--configfile", "site.yaml", "classify", log])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "broken_site" in result.stderr and "invalid regular expression" in result.stderr


# ----------------------------------------------------------------------------- --explain

TWO_PATTERNS = (
    "worker started\n"
    "OSError: [Errno 101] Network is unreachable\n"
    "OSError: [Errno 28] No space left on device\n"
)


def test_explain_shows_every_match_and_why_the_winner_won(run):
    result = run("--explain", "-", input=TWO_PATTERNS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "class:       ResourceError (disk), retryable",
        "decided by:  pattern (no_space_left)",
        "evidence:    OSError: [Errno 28] No space left on device",
        "why:         no_space_left shares priority 50 with network_unreachable (TransientError, "
        "priority 50); among equal priorities the last matching line wins (the final error "
        "usually comes last)",
        "matching patterns (2, highest priority first):",
    ]
    assert lines[5] == "    50  no_space_left  ResourceError/disk  line 3"
    assert lines[7].startswith("        source: strerror(ENOSPC)")
    assert lines[8] == "    50  network_unreachable  TransientError  line 2"
    assert lines[9] == "        line:   OSError: [Errno 101] Network is unreachable"


def test_explain_json_and_the_other_deciders(run, tmp_path):
    result = run("--explain", "--json", "-", input="Error: Unable to write 9437184 bytes to output x.nii\n"
                 "OSError: [Errno 28] No space left on device\n")
    data = json.loads(result.stdout)
    assert (data["decided_by"], data["pattern_id"], data["resource"]) == ("pattern", "dcm2niix_short_write", "disk")
    assert data["reason"] == ("dcm2niix_short_write has the highest priority (70); lower: "
                              "no_space_left (ResourceError/disk, priority 50)")
    assert [(m["pattern_id"], m["priority"], m["line_number"]) for m in data["matches"]] == [
        ("dcm2niix_short_write", 70, 1), ("no_space_left", 50, 2)]
    assert data["matches"][0]["source"].startswith("rordenlab/dcm2niix@")
    state = json.loads(run("--explain", "--json", "--slurm-state", "TIMEOUT", "-", input="x\n").stdout)
    assert state["decided_by"] == "slurm_state"
    assert state["reason"].startswith("the SLURM state TIMEOUT has a class of its own")
    code = json.loads(run("--explain", "--json", "--exit-code", "127", "-", input="x\n").stdout)
    assert (code["decided_by"], code["reason"]) == (
        "exit_code", "no pattern matched; the rule for exit code 127 decides")
    unknown = run("--explain", "--exit-code", "3", "-", input="x\n").stdout
    assert "why:         no pattern matched and exit code 3 has no rule: the failure is unknown" in unknown
    assert "matching patterns (0, highest priority first):" in unknown


def test_explain_names_user_patterns_and_same_line_ties(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "error_handling:\n  patterns:\n"
        "    - {id: site_nfs, pattern: 'Stale file handle', class: TransientError, priority: 50}\n")
    result = CliRunner().invoke(
        cli, ["-d", str(tmp_path), "classify", "--explain", "-"],
        input="OSError: [Errno 116] Stale file handle\n")
    assert result.exit_code == 0, result.output
    assert "decided by:  pattern (site_nfs)" in result.stdout
    assert "on the same line; there the pattern listed first wins (user patterns before shipped ones)" in result.stdout
    assert "    50  site_nfs  TransientError  line 1  (user pattern)" in result.stdout
