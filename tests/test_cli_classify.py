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
