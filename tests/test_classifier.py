"""The error classifier: the shipped pattern pack, precedence, user patterns, evidence."""

from __future__ import annotations

import csv
import errno
import io
import os
from pathlib import Path

import pytest

from neuroflow_recover.classify.classes import ERROR_CLASSES, NON_RETRYABLE, RESOURCES
from neuroflow_recover.classify.classifier import (
    EVIDENCE_MAX,
    HEAD_BYTES,
    TAIL_BYTES,
    Classification,
    Classifier,
    _last_match,
    classify,
    normalize_slurm_state,
    read_window,
    scan_window,
)
from neuroflow_recover.classify.corpus import read_corpus
from neuroflow_recover.classify.patterns import required_literals, shipped_pack
from neuroflow_recover.classify.prefilter import Prefilter, line_bounds
from neuroflow_recover.errors import ConfigError, LogReadError, NeuroflowError
from neuroflow_recover.step.messages import format_missing_outputs, format_not_starting

DATA = Path(__file__).parent / "data"


def load_rows(name: str) -> list[dict]:
    with open(DATA / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def exit_code_of(row: dict) -> int | None:
    return int(row["exit_code"]) if row["exit_code"].strip() else None


def outcome(row: dict) -> Classification:
    return classify(row["text"], exit_code=exit_code_of(row))


FAILURE_ROWS = load_rows("failure_messages.tsv")
# every corpus (tests/test_corpus.py scores them): lines for the literal pre-check below
CORPUS_FILES = ("failure_messages.tsv", "heldout_messages.tsv", "corpus_development.tsv", "corpus_heldout.tsv")


# ----------------------------------------------------------------------------- data sets


@pytest.mark.parametrize("row", FAILURE_ROWS, ids=[r["id"] for r in FAILURE_ROWS])
def test_failure_messages(row):
    result = outcome(row)
    assert result.error_class == row["expected_class"], result
    assert (result.resource or "") == row["expected_resource"], result
    assert result.retryable == (row["expected_class"] not in NON_RETRYABLE)
    assert result.pattern_id is not None  # every known message is recognised by a rule
    if result.pattern_id.startswith("exit:"):
        assert result.pattern_id == f"exit:{exit_code_of(row)}"
    else:
        assert result.evidence and result.evidence in row["text"]


def test_failure_messages_file_is_complete():
    assert len(FAILURE_ROWS) >= 24
    for row in FAILURE_ROWS:
        assert row["expected_class"] in ERROR_CLASSES, row["id"]
        assert row["expected_resource"] in ("", *RESOURCES), row["id"]
        assert row["source"].strip() and row["text"].strip(), row["id"]


# ----------------------------------------------------------------------------- pattern pack


def test_shipped_pack_is_well_formed():
    pack = shipped_pack()
    ids = [p.id for p in pack.patterns]
    assert len(ids) == len(set(ids))
    for p in pack.patterns:
        assert p.tool and p.source, p.id
        assert not p.user
        if p.resource:
            assert p.error_class == "ResourceError", p.id
    assert set(pack.slurm_states) == {
        "OUT_OF_MEMORY", "TIMEOUT", "DEADLINE", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"
    }
    assert pack.exit_codes[137].resource == "memory"
    assert pack.exit_codes[124].resource == "runtime"


SAMPLE_LINES = [
    "slurmstepd: error: *** JOB 13 ON localhost CANCELLED AT 2026-11-28T13:00:00 DUE TO TIME LIMIT ***",
    "slurmstepd: error: StepId=14.0 exceeded memory limit (766914560 > 524288000), being killed",
    "neuroflow: heudiconv exited 0 but did not write: bids/sub-01/ses-01/dwi/x.nii.gz",
    "CalledProcessError: Command 'x' returned non-zero exit status 137.",
    "Return code: 137",
    "ModuleNotFoundError: No module named 'nipype'",
    "requests.exceptions.HTTPError: 503 Server Error: Service Unavailable for url",
    "TimeoutError: [Errno 110] Connection timed out",
    "\tKilled",
]


def test_literal_precheck_never_hides_a_match():
    """The fast pre-check may only skip patterns that cannot match."""
    lines = [ln for name in CORPUS_FILES for row in load_rows(name) for ln in row["text"].splitlines()]
    lines += SAMPLE_LINES
    for pattern in Classifier().patterns:
        for line in lines:
            if pattern.compiled.search(line):
                assert pattern.may_match(line), (pattern.id, line)


def test_required_literals():
    assert required_literals("abcdef") == ("abcdef",)
    assert required_literals("No space|Disk quota") == ("No space", "Disk quota")
    assert required_literals("x(?:abc|de)") is None  # "de" too short to be worth it
    assert required_literals("(?i)killed") is None  # case-insensitive: no literal check
    assert required_literals("foo(?i:bar)baz") is None
    assert required_literals("(?:abc)?def") == ("def",)  # an optional group is not required


# ----------------------------------------------------------------------------- SLURM states


@pytest.mark.parametrize(
    "state, cls, resource",
    [
        ("OUT_OF_MEMORY", "ResourceError", "memory"),
        ("OUT_OF_ME+", "ResourceError", "memory"),  # sacct's truncated column
        ("TIMEOUT", "ResourceError", "runtime"),
        ("DEADLINE", "ResourceError", "runtime"),
        ("NODE_FAIL", "TransientError", None),
        ("PREEMPTED", "TransientError", None),
        ("BOOT_FAIL", "TransientError", None),
        ("timeout", "ResourceError", "runtime"),
    ],
)
def test_slurm_state_classes(state, cls, resource):
    result = classify("some unrelated output", exit_code=1, slurm_state=state)
    assert (result.error_class, result.resource) == (cls, resource)
    assert result.pattern_id == f"slurm:{normalize_slurm_state(state)}"
    assert result.evidence == f"SLURM state: {normalize_slurm_state(state)}"
    assert result.retryable


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "CANCELLED by 0", "COMPLETED", "ERROR", "", None])
def test_slurm_states_without_meaning_fall_through(state):
    assert classify("Disk quota exceeded", slurm_state=state).pattern_id == "disk_quota"
    assert classify("nothing known", exit_code=137, slurm_state=state).pattern_id == "exit:137"
    assert classify("nothing known", slurm_state=state).error_class == "RetryableError"


def test_normalize_slurm_state():
    assert normalize_slurm_state("CANCELLED by 12345") == "CANCELLED"
    assert normalize_slurm_state(" out_of_memory ") == "OUT_OF_MEMORY"
    assert normalize_slurm_state("   ") is None


# ----------------------------------------------------------------------------- precedence


def test_slurm_state_beats_patterns_and_takes_supporting_evidence():
    text = "step output\n\tKilled\nslurmstepd: error: Detected 1 oom-kill event(s) in StepId=5.batch.\n"
    result = classify(text, exit_code=137, slurm_state="OUT_OF_MEMORY")
    assert result.pattern_id == "slurm:OUT_OF_MEMORY"
    assert result.evidence == "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=5.batch."
    # the state wins even against a specific pattern of another class
    result = classify("OSError: [Errno 101] Network is unreachable", slurm_state="TIMEOUT")
    assert (result.error_class, result.resource, result.pattern_id) == (
        "ResourceError", "runtime", "slurm:TIMEOUT"
    )


def test_failed_state_with_overmemorykill_line_is_memory():
    text = "slurmstepd: error: StepId=14.0 exceeded memory limit (766914560 > 524288000), being killed"
    result = classify(text, exit_code=1, slurm_state="FAILED")
    assert (result.error_class, result.resource, result.pattern_id) == (
        "ResourceError", "memory", "slurm_exceeded_memory"
    )


def test_specific_beats_generic_regardless_of_order():
    text = "OSError: [Errno 28] No space left on device\nTraceback ...\n\tKilled\n"
    result = classify(text)
    assert (result.resource, result.pattern_id) == ("disk", "no_space_left")
    text = "slurmstepd: error: *** JOB 3 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***\nKilled\n"
    assert classify(text).resource == "runtime"


def test_equal_priority_last_occurrence_wins():
    first, second = "OSError: [Errno 101] Network is unreachable", "OSError: [Errno 28] No space left on device"
    assert classify(f"{first}\n{second}\n").pattern_id == "no_space_left"
    assert classify(f"{second}\n{first}\n").pattern_id == "network_unreachable"


def test_patterns_beat_exit_code():
    assert classify("ConnectionResetError: Connection reset by peer", exit_code=1).error_class == "TransientError"
    assert classify("terminate called after throwing an instance of 'std::bad_alloc'", exit_code=2).resource == "memory"


@pytest.mark.parametrize(
    "code, cls, resource",
    [
        (137, "ResourceError", "memory"),
        (-9, "ResourceError", "memory"),
        (124, "ResourceError", "runtime"),
        (127, "ConfigurationError", None),
        (1, "NonRetryableError", None),
        (2, "NonRetryableError", None),
    ],
)
def test_exit_code_is_the_last_resort(code, cls, resource):
    result = classify("the tool printed nothing we know", exit_code=code)
    assert (result.error_class, result.resource, result.pattern_id) == (cls, resource, f"exit:{code}")
    assert result.evidence == f"exit code {code}"


@pytest.mark.parametrize("code", [None, 0, 3, 139, 143])
def test_default_is_retryable_error(code):
    result = classify("the tool printed nothing we know", exit_code=code)
    assert result == Classification("RetryableError", True, None, None, None)


@pytest.mark.parametrize(
    "line",
    [
        "reading /data/Timeout_study/sub-01/anat/sub-01_T1w.nii.gz",
        "qsiprep --timeout 30 --nprocs 8",
        "INFO: Using TimeoutHandler from plugins",
        "sub-01_task-timeouts_bold.nii.gz",
    ],
)
def test_generic_timeout_is_word_bounded(line):
    assert classify(line).pattern_id is None


def test_generic_timeout_and_killed_are_low_priority():
    assert classify("TimeoutError: the read operation timed out").error_class == "TransientError"
    text = "TimeoutError: timed out fetching a template (retried)\nMemoryError\n"
    assert classify(text).pattern_id == "python_memory_error"


def test_resource_temporarily_unavailable_has_no_resource():
    result = classify("fork: retry: Resource temporarily unavailable")
    assert (result.error_class, result.resource) == ("ResourceError", None)


# ----------------------------------------------------------------------------- step runner


def test_missing_outputs_line_is_validation_error():
    line = format_missing_outputs("heudiconv", ["bids/sub-01/ses-01/dwi/a.nii.gz", "bids/b.json"])
    assert line == "neuroflow: heudiconv exited 0 but did not write: bids/sub-01/ses-01/dwi/a.nii.gz, bids/b.json"
    result = classify(f"INFO: Need to process 1 study sessions\n{line}\n", exit_code=0)
    assert (result.error_class, result.pattern_id, result.evidence) == (
        "ValidationError", "neuroflow_missing_outputs", line
    )
    # a real cause in the tool's output wins over the bare observation
    result = classify(f"WARNING: [Errno 28] No space left on device\n{line}\n", exit_code=0)
    assert result.resource == "disk"


def test_missing_outputs_line_is_shortened():
    line = format_missing_outputs("qsiparc", [f"out/{i}.tsv" for i in range(8)])
    assert line.endswith("out/4.tsv, ... (3 more)")


@pytest.mark.parametrize(
    "previous",
    [
        Classification("ConfigurationError", False, None, "freesurfer_license",
                       "ERROR: FreeSurfer license file /opt/freesurfer/license.txt not found."),
        Classification("ValidationError", False, None, "dcm2niix_no_dicom", "Error: Unable to find any DICOM images"),
        Classification("NonRetryableError", False, None, "exit:1", "exit code 1"),
        Classification("ResourceError", True, "memory", "killed_line", "Killed"),
        Classification("RetryableError", True, None, None, None),
    ],
)
def test_fail_fast_line_round_trips(previous):
    line = format_not_starting("qsiprep_preprocess", 2, previous)
    assert line.startswith("neuroflow: not starting qsiprep_preprocess attempt 2: attempt 1 failed with ")
    for text in (line, line + " -- circuit breaker open: 3 jobs failed like this"):
        result = classify(text + "\n", exit_code=3)
        assert (result.error_class, result.resource) == (previous.error_class, previous.resource)
        assert result.pattern_id == "neuroflow_not_starting"
        assert result.evidence == text


def test_fail_fast_line_flattens_multiline_evidence():
    prev = Classification("ValidationError", False, None, "x", "line one\n  line two")
    assert format_not_starting("r", 3, prev).endswith("attempt 2 failed with ValidationError: line one line two")


# ----------------------------------------------------------------------------- user patterns


def cfg_with(patterns) -> dict:
    return {"error_handling": {"patterns": patterns}}


def test_user_pattern_extends_the_pack():
    clf = Classifier.from_config(cfg_with([
        {"id": "site_quota", "pattern": "quota exceeded on /scratch", "class": "ResourceError", "resource": "disk"},
    ]))
    result = clf.classify("lfs: quota exceeded on /scratch/u123\n")
    assert (result.error_class, result.resource, result.pattern_id) == ("ResourceError", "disk", "site_quota")
    assert classify("lfs: quota exceeded on /scratch/u123\n").pattern_id != "site_quota"


def test_a_match_on_the_last_character_of_a_line_finds_the_last_such_line():
    clf = Classifier.from_config(cfg_with([{"id": "bang", "pattern": "!", "class": "ConfigurationError"}]))
    result = clf.classify("first failed!\nsecond failed!\nthird ok\n")
    assert (result.pattern_id, result.evidence) == ("bang", "second failed!")


def test_a_text_holding_undecodable_bytes_as_surrogates_is_classified():
    """A caller's text decoded with surrogateescape (os.fsdecode, subprocess output) still
    goes through the prefilter's UTF-8 search."""
    text = b"caf\xe9: OSError: [Errno 116] Stale file handle\n".decode("utf-8", "surrogateescape")
    assert classify(text).pattern_id == "stale_nfs"


def test_user_pattern_is_checked_before_the_shipped_pack():
    # an offline site: an unreachable network is a configuration problem, never transient
    clf = Classifier.from_config(cfg_with([
        {"id": "offline_nodes", "pattern": "Network is unreachable", "class": "ConfigurationError"},
    ]))
    result = clf.classify("OSError: [Errno 101] Network is unreachable")
    assert (result.error_class, result.retryable, result.pattern_id) == ("ConfigurationError", False, "offline_nodes")
    # a user pattern may ask for a low priority (then specific shipped patterns win)
    clf = Classifier.from_config(cfg_with([
        {"id": "weak", "pattern": "Errno", "class": "NonRetryableError", "priority": 5},
    ]))
    assert clf.classify("OSError: [Errno 116] Stale file handle").pattern_id == "stale_nfs"
    assert clf.classify("OSError: [Errno 1] whatever").pattern_id == "weak"


def test_empty_or_missing_user_patterns():
    for cfg in ({}, None, {"error_handling": {}}, cfg_with([]), cfg_with(None)):
        assert Classifier.from_config(cfg).classify("Killed").pattern_id == "killed_line"


@pytest.mark.parametrize(
    "patterns, message",
    [
        ([{"pattern": "x", "class": "ResourceError"}], "error_handling.patterns[0]: 'id' must be"),
        ([{"id": "broken", "pattern": "([", "class": "ResourceError"}], "(id 'broken'): invalid regular expression"),
        ([{"id": "nope", "pattern": "x", "class": "FatalError"}], "(id 'nope'): 'class' must be one of"),
        ([{"id": "nores", "pattern": "x", "class": "TransientError", "resource": "memory"}], "(id 'nores'): 'resource' is only"),
        ([{"id": "badres", "pattern": "x", "class": "ResourceError", "resource": "gpu"}], "(id 'badres'): 'resource' must be"),
        ([{"id": "nopat", "class": "ResourceError"}], "(id 'nopat'): 'pattern' must be"),
        ([{"id": "typo", "pattern": "x", "class": "ResourceError", "clas": 1}], "(id 'typo'): unknown key(s) clas"),
        ([{"id": "prio", "pattern": "x", "class": "ResourceError", "priority": "high"}], "(id 'prio'): 'priority' must"),
        ([{"id": "dup", "pattern": "x", "class": "ResourceError"}, {"id": "dup", "pattern": "y", "class": "ResourceError"}], "duplicate pattern id 'dup'"),
        (["not a mapping"], "error_handling.patterns[0]: a pattern must be a mapping"),
        ({"id": "x"}, "error_handling.patterns: must be a list"),
    ],
)
def test_bad_user_patterns_name_the_pattern(patterns, message):
    with pytest.raises(ConfigError) as info:
        Classifier.from_config(cfg_with(patterns))
    assert message in str(info.value)
    assert isinstance(info.value, NeuroflowError)


def test_regex_alias_and_case_insensitive_user_pattern():
    clf = Classifier.from_config(cfg_with([
        {"id": "gpu", "regex": "(?i)cuda error: an illegal memory access", "class": "TransientError"},
    ]))
    assert clf.classify("RuntimeError: CUDA error: an illegal memory access was encountered").pattern_id == "gpu"


# ----------------------------------------------------------------------------- evidence, input


def test_evidence_is_the_whole_stripped_line_of_the_last_occurrence():
    text = (
        "  OSError: [Errno 28] No space left on device: '/work/a'  \n"
        "more output\n"
        "\tOSError: [Errno 28] No space left on device: '/work/b'\n"
        "done\n"
    )
    assert classify(text).evidence == "OSError: [Errno 28] No space left on device: '/work/b'"


def test_evidence_is_capped():
    line = "x" * 2000 + " No space left on device " + "y" * 2000
    evidence = classify(line).evidence
    assert len(evidence) == EVIDENCE_MAX and evidence.endswith("...")


def test_bytes_and_invalid_utf8_are_decoded_with_replacement():
    result = classify(b"\xff\xfe garbage \x80\nstd::bad_alloc\n")
    assert result.resource == "memory"
    assert classify(b"\xc3\x28").error_class == "RetryableError"
    assert classify("").error_class == classify(None).error_class == "RetryableError"


def test_lines_are_matched_one_at_a_time():
    # "exceeded" on one line and "memory limit" on the next is no memory-limit line
    clf = Classifier.from_config(cfg_with([
        {"id": "two_lines", "pattern": r"alpha\s+beta", "class": "ValidationError"},
    ]))
    assert clf.classify("alpha\nbeta\n").pattern_id is None
    assert clf.classify("alpha\nalpha  beta\n").pattern_id == "two_lines"


def big_log(lines: int) -> str:
    filler = "230707-10:34:45,458 nipype.workflow INFO: [Node] Finished \"qsiprep_wf.node_{i}\", elapsed time 1.2s."
    return "\n".join(filler.format(i=i) for i in range(lines))


def test_big_log_head_and_tail_are_scanned():
    """~12 MB of output: the first lines and the last lines are seen; the middle is not."""
    body = big_log(120_000)
    assert len(body) > HEAD_BYTES + TAIL_BYTES
    start = "ERROR: FreeSurfer license file /opt/freesurfer/license.txt not found.\n"
    assert classify(start + body).pattern_id == "freesurfer_license"
    end = "\nslurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***\n"
    assert classify(body + end).resource == "runtime"
    half = len(body) // 2
    middle = body[:half] + "\nOSError: [Errno 28] No space left on device\n" + body[half:]
    assert classify(middle).pattern_id is None  # documented: only head and tail are scanned
    assert classify(middle, exit_code=137).pattern_id == "exit:137"


def test_read_window_reads_head_and_tail_of_a_file(tmp_path):
    body = big_log(120_000)
    path = tmp_path / "big.log"
    path.write_text("Illegal instruction (core dumped)\n" + body + "\nfinal line: std::bad_alloc\n")
    with open(path, "rb") as fh:
        window = read_window(fh)
    assert len(window) < HEAD_BYTES + TAIL_BYTES + 2
    assert window.startswith("Illegal instruction") and window.rstrip().endswith("std::bad_alloc")
    # both lines have priority 50: the later one wins
    with open(path, "rb") as fh:
        assert Classifier().classify_stream(fh).pattern_id == "cxx_bad_alloc"
    piped = NotSeekable(path.read_bytes())  # like stdin: read whole, then windowed
    assert Classifier().classify_stream(piped).pattern_id == "cxx_bad_alloc"


class NotSeekable(io.RawIOBase):
    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("not seekable")

    def readinto(self, buffer) -> int:
        return self._data.readinto(buffer)


def test_classifier_compiles_once():
    assert Classifier().pack is shipped_pack()
    clf = Classifier()
    assert all(p.compiled is q.compiled for p, q in zip(clf.patterns, Classifier().patterns))


@pytest.mark.parametrize(
    "text, pattern_id",
    [
        ("Command 'x' returned non-zero exit status 137.", "exit_status_137"),
        ("Return code: 137", "exit_status_137"),
        ("exit_code=137", "exit_status_137"),
        ("Complete log(s): /tmp/fixtures/exit137/.snakemake/log/a.snakemake.log", None),
        ("wrote results/exit124/sub-01.txt", None),
        ("timeout: the monitored command dumped core; exit status 124", "exit_status_124"),
    ],
)
def test_exit_status_texts_need_a_separator(text, pattern_id):
    assert classify(text).pattern_id == pattern_id


def test_snakemake_missing_output_exception():
    text = (
        'MissingOutputException in rule qsiparc_parcellate in file "workflow/rules/qsiparc.smk", line 3:\n'
        "Job 4 completed successfully, but some output files are missing. Missing files after 5 seconds.\n"
    )
    result = classify(text)
    assert (result.error_class, result.pattern_id) == ("ValidationError", "snakemake_missing_output")
    # a job block's "reason: Missing output files" line is no failure
    assert classify("    reason: Missing output files: results/a.txt").pattern_id is None


@pytest.mark.parametrize(
    "line, cls, resource",
    [
        ("neuroflow: qsiprep_preprocess attempt 1 failed (exit 137): ResourceError/memory [exit:137]: exit code 137",
         "ResourceError", "memory"),
        ("neuroflow: heudiconv_convert attempt 2 failed (exit 1): ConfigurationError [freesurfer_license]: ERROR: x",
         "ConfigurationError", None),
        ("neuroflow: qsiparc_parcellate attempt 1 failed (exit -15): TransientError [neuroflow:signal]: interrupted",
         "TransientError", None),
        ("neuroflow: cannot start qsiprep: No such file or directory", "ConfigurationError", None),
        ("neuroflow: qsiprep interrupted by SIGTERM after 12 s (not a time limit)", "TransientError", None),
        ("neuroflow: qsiprep stopped by SIGTERM DUE TO TIME LIMIT of SLURM job 12 after 3590 s (runtime 60 min)",
         "ResourceError", "runtime"),
    ],
)
def test_step_runner_lines_reclassify_to_its_verdict(line, cls, resource):
    tool_output = "230707-10:34:45 nipype.workflow INFO: running\n\tKilled\n"
    result = classify(tool_output + line + "\n")
    assert (result.error_class, result.resource) == (cls, resource)
    assert result.evidence == line


@pytest.mark.parametrize(
    "text, cls",
    [
        ("2026-11-28 15:00:00 ERROR No dseg files found in derivatives/qsirecon with given filters.", "ValidationError"),
        ("ERROR tck2connectome not found on PATH. Install MRtrix3 to use this command.", "ConfigurationError"),
        # the warning of `qsiparc run` is not a failure cause
        ("WARNING tck2connectome not found on PATH — connectome construction will be skipped.", "RetryableError"),
    ],
)
def test_qsiparc_messages(text, cls):
    assert classify(text).error_class == cls


# ------------------------------------------------------ the scanned window (docs/testing.md)
WINDOW_TEXT = "aa\nbb\ncc\ndd\nee\n"  # 15 characters


@pytest.mark.parametrize(
    "text, head, tail, window",
    [
        (WINDOW_TEXT, 10, 5, WINDOW_TEXT),  # exactly head + tail: all of it
        (WINDOW_TEXT, 7, 5, "aa\nbb\n\nee\n"),  # whole lines: the head's last, the tail's first cut
        ("abcdefgh\nij", 4, 4, "abcd\nij"),  # no newline in the head: the head as it is
        ("aaaa\nbbbb", 2, 5, "aa\nbbbb"),  # the tail starts at a newline: only that one goes
        ("aaaaaabbbbbb", 2, 3, "aa\nbbb"),  # no newline in the tail: the tail as it is
    ],
)
def test_scan_window_keeps_whole_lines_of_the_head_and_the_tail(text, head, tail, window):
    assert scan_window(text, head, tail) == window


class Pipe(io.RawIOBase):
    """A stream that cannot seek or name a file: what classify gets from a pipe."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def read(self, size=-1):
        return self._data.read(size)

    def fileno(self):
        raise io.UnsupportedOperation("no fileno")

    def seek(self, *args):
        raise io.UnsupportedOperation("not seekable")


@pytest.mark.parametrize("head, tail", [(10, 5), (7, 5), (3, 4)])
def test_files_memory_and_pipes_give_the_same_window(tmp_path, monkeypatch, head, tail):
    from neuroflow_recover.classify import classifier

    monkeypatch.setattr(classifier, "STREAM_CHUNK", 2)  # many chunks through the rolling tail
    path = tmp_path / "log.txt"
    path.write_bytes(WINDOW_TEXT.encode())
    expected = scan_window(WINDOW_TEXT, head, tail)
    with path.open("rb") as fh:
        assert read_window(fh, head, tail) == expected
    assert read_window(io.BytesIO(WINDOW_TEXT.encode()), head, tail) == expected
    assert read_window(Pipe(WINDOW_TEXT.encode()), head, tail) == expected


def test_a_pipe_is_read_up_to_the_limit_and_refused_beyond(monkeypatch):
    from neuroflow_recover.classify import classifier

    monkeypatch.setattr(classifier, "MAX_STREAM_BYTES", 3 << 20)
    monkeypatch.setattr(classifier, "STREAM_CHUNK", 1 << 20)
    assert read_window(Pipe(b"x" * (3 << 20)), 4, 4) == "xxxx\nxxxx"
    with pytest.raises(LogReadError) as caught:
        read_window(Pipe(b"x" * ((3 << 20) + 1)), 4, 4)
    assert str(caught.value) == ("more than 3 MiB on a pipe (classify reads at most that much "
                                 "from one; give the log as a file)")


# ------------------------------------------------------ user patterns and matching in detail
def user(pid, regex, cls="TransientError", **more):
    return {"id": pid, "regex": regex, "class": cls, **more}


def test_user_patterns_come_first_are_marked_and_named_by_position():
    from neuroflow_recover.classify.classifier import Classifier

    c = Classifier([user("site_quota", "quota exceeded")])
    assert (c.patterns[0].id, c.patterns[0].user, c.strict) == ("site_quota", True, False)
    assert len(c.patterns) == 1 + len(shipped_pack().patterns)
    with pytest.raises(ConfigError, match=r"^extra_patterns\[1\]"):
        Classifier([user("a", "x"), {"id": "b"}])
    with pytest.raises(ConfigError) as caught:
        Classifier([user("a", "x"), user("a", "y"), user("b", "x"), user("b", "y"), user("c", "z")])
    assert str(caught.value) == "duplicate user pattern id(s): a, b"


def test_config_patterns_are_user_patterns_and_strictness_is_asked_for():
    cfg = {"error_handling": {"patterns": [user("site_quota", "quota exceeded")]}}
    assert Classifier.from_config(cfg).patterns[0].user is True
    assert Classifier.from_config(cfg).strict is False
    assert Classifier.from_config(cfg, strict=True).strict is True
    with pytest.raises(ConfigError, match=r"^error_handling: must be a mapping$"):
        Classifier.from_config({"error_handling": 5})


def test_unusable_config_patterns_fall_back_to_the_shipped_ones_with_a_warning(logged):
    from neuroflow_recover.classify.classifier import classifier_for, default_classifier

    assert classifier_for({}) is default_classifier() and classifier_for(None) is default_classifier()
    got = classifier_for({"error_handling": {"patterns": [{"id": "broken"}]}})
    assert got is default_classifier()
    assert [(e["event"], e["log_level"]) for e in logged] == [
        ("config patterns unusable, shipped patterns only", "warning")]
    assert logged[0]["error"].startswith("error_handling.patterns[0]")
    good = classifier_for({"error_handling": {"patterns": [user("site_quota", "quota exceeded")]}})
    assert good.patterns[0].id == "site_quota"


SLOW = user("slow", r"(a|aa)+b")  # backtracks catastrophically on a line of a's
SLOW_MESSAGE = ("user pattern 'slow' ('(a|aa)+b') did not finish within 0.05 s on this text: it "
                "backtracks catastrophically (overlapping repeats such as (a|aa)+); rewrite it "
                "(limit: env NEUROFLOW_PATTERN_TIMEOUT)")


def test_a_backtracking_user_pattern_is_stopped_skipped_or_raised(monkeypatch, logged):
    from neuroflow_recover.classify.classifier import PatternTimeout

    monkeypatch.setenv("NEUROFLOW_PATTERN_TIMEOUT", "0.05")
    text = "Killed\n" + "a" * 60 + "\n"
    found = Classifier([SLOW]).classify(text)
    assert found == Classifier().classify(text)  # skipped: the shipped patterns still decide
    assert found.pattern_id is not None
    assert logged == [{"event": "user pattern skipped", "log_level": "warning", "error": SLOW_MESSAGE}]
    with pytest.raises(PatternTimeout) as caught:
        Classifier([SLOW], strict=True).classify(text)
    assert str(caught.value) == SLOW_MESSAGE


def test_the_pattern_time_limit_must_be_a_number(monkeypatch):
    from neuroflow_recover.classify.classifier import pattern_timeout_s

    monkeypatch.setenv("NEUROFLOW_PATTERN_TIMEOUT", "soon")
    with pytest.raises(NeuroflowError) as caught:
        pattern_timeout_s()
    assert str(caught.value) == "NEUROFLOW_PATTERN_TIMEOUT='soon' is not a number of seconds"


def test_the_last_matching_line_wins_and_a_match_over_a_line_end_is_checked_on_its_line():
    c = Classifier([user("err", r"err \w")])
    assert c.best_match("err A\nerr B\n").line == "err B"
    assert c.best_match("x\nerr A\nerr B").line == "err B"
    spans = Classifier([user("foo", r"foo\s*(bar)?")])
    assert spans.best_match("foo\nbar").line == "foo"  # "foo\nbar" matched; the line alone too
    explained = Classifier([user("foo", "foo")]).explain("\nfoo")
    assert [(m.pattern_id, m.line_number, m.line) for m in explained.matches] == [("foo", 2, "foo")]


def test_on_the_same_line_and_priority_the_first_listed_pattern_wins():
    c = Classifier([user("first", "boom", priority=80), user("second", "boom", priority=80)])
    assert c.best_match("boom").pattern.id == "first"


def test_evidence_of_exactly_the_maximum_length_is_kept_whole():
    line = "q" * (EVIDENCE_MAX - 5) + "boom!"
    assert len(line) == EVIDENCE_MAX
    assert Classifier([user("boom", "boom")]).classify(line).evidence == line


def test_streams_pass_the_exit_code_and_the_slurm_state_on():
    c = Classifier()
    assert c.classify_stream(io.BytesIO(b"nothing known"), exit_code=137) == c.classify(
        "nothing known", exit_code=137)
    assert c.classify_stream(io.BytesIO(b"x"), slurm_state="OUT_OF_MEMORY").pattern_id == (
        "slurm:OUT_OF_MEMORY")


def test_a_resource_belongs_to_resource_errors_only_and_states_lose_their_plus():
    from neuroflow_recover.classify.classifier import make_classification

    assert make_classification("TransientError", "memory").resource is None
    assert make_classification("ResourceError", "memory").resource == "memory"
    assert normalize_slurm_state(" cancelled+ by 1000") == "CANCELLED"


def test_a_match_that_starts_on_a_line_break_belongs_to_no_line():
    # "\s+foo" matches "\nfoo" from the first character, an empty line: the line alone does not match
    assert Classifier([user("ws", r"\s+foo")]).best_match("\nfoo") is None


def test_a_class_taken_from_the_message_keeps_a_resource_only_for_resource_errors():
    line = "neuroflow: qsiprep_preprocess attempt 2 failed (exit 1): TransientError/memory [x]"
    (match,) = [m for m in Classifier().explain(line).matches if m.pattern_id == "neuroflow_attempt_failed"]
    assert (match.error_class, match.resource) == ("TransientError", None)
    line = "neuroflow: qsiprep_preprocess attempt 2 failed (exit 1): ResourceError/memory [x]"
    (match,) = [m for m in Classifier().explain(line).matches if m.pattern_id == "neuroflow_attempt_failed"]
    assert (match.error_class, match.resource) == ("ResourceError", "memory")


def test_the_reason_names_what_decided_and_every_rival():
    c = Classifier([user("a", "alpha", priority=70), user("b", "beta", priority=60),
                    user("c", "gamma", priority=50, resource="memory", **{"class": "ResourceError"})])
    assert c.explain("alpha\nbeta\ngamma").reason == (
        "a has the highest priority (70); lower: b (TransientError, priority 60), "
        "c (ResourceError/memory, priority 50)")
    tied = Classifier([user("a", "alpha", priority=70), user("b", "beta", priority=70),
                       user("c", "gamma", priority=70)])
    assert tied.explain("beta\ngamma\nalpha").reason == (
        "a shares priority 70 with c (TransientError, priority 70), b (TransientError, priority 70); "
        "among equal priorities the last matching line wins (the final error usually comes last)")
    unknown = "the failure is unknown (retried; stopped when the next attempt fails the same way)"
    assert c.explain("nothing").reason == f"no pattern matched and no exit code is known: {unknown}"
    assert c.explain(None, exit_code=3).reason == f"no pattern matched and exit code 3 has no rule: {unknown}"
    state = "the SLURM state OUT_OF_MEMORY has a class of its own and wins over every pattern; "
    assert c.explain("nothing", slurm_state="OUT_OF_MEMORY").reason == f"{state}no line has that class"
    assert c.explain("MemoryError", slurm_state="OUT_OF_MEMORY").reason == (
        f"{state}its evidence is the best line of that class (python_memory_error)")


def test_an_explained_match_names_its_patterns_tool():
    (match,) = Classifier([user("q", "quota", tool="mytool")]).explain("quota").matches
    assert (match.pattern_id, match.tool, match.user) == ("q", "mytool", True)


def test_classify_input_reads_regular_files_only_and_says_why_not(tmp_path, monkeypatch):
    from neuroflow_recover.classify import classifier as module

    log = tmp_path / "log.txt"
    log.write_text("MemoryError\n")
    assert module.classify_input(log) == classify("MemoryError")  # not an Explanation
    missing, fifo = tmp_path / "missing.log", tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, problem in ((missing, "no such file"), (tmp_path, "not a regular file (a directory)"),
                          (fifo, "not a regular file (a FIFO); pipe it into `neuroflow-recover classify -` "
                           "instead")):
        with pytest.raises(LogReadError) as caught:
            module.classify_input(path)
        assert str(caught.value) == f"cannot read {path}: {problem}"

    def denied(*_args):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(module, "open", denied, raising=False)
    with pytest.raises(LogReadError) as caught:
        module.classify_input(str(log))
    assert str(caught.value) == f"cannot read {log}: Permission denied"


def test_classify_input_raises_when_a_config_pattern_is_over_its_time_limit(tmp_path, monkeypatch):
    from neuroflow_recover.classify.classifier import PatternTimeout, classify_input

    monkeypatch.setenv("NEUROFLOW_PATTERN_TIMEOUT", "0.05")
    log = tmp_path / "log.txt"
    log.write_text("Killed\n" + "a" * 60 + "\n")
    with pytest.raises(PatternTimeout) as caught:
        classify_input(log, cfg={"error_handling": {"patterns": [SLOW]}})
    assert str(caught.value) == SLOW_MESSAGE


def _noise(lines: int) -> list[str]:
    """Tool output that holds some of the patterns' literals on lines no pattern matches."""
    kinds = ["241130-02:13:44,512 nipype.workflow INFO:", '\t [Node] Finished "eddy", elapsed time 124.2s.',
             "Error: 0 of 12 volumes flagged", "residual 0.00124 [Errno -] skipped", "Killed? no"]  # fmt: skip
    return [kinds[i % len(kinds)] for i in range(lines)]


@pytest.mark.parametrize("where", ["start", "middle", "end", "twice"])
def test_the_prefilter_finds_what_searching_the_whole_text_finds(where):
    """Every pattern's last matching line, with its offset, is the same whether the pattern
    runs on the prefilter's candidate lines or on the whole text (the corpus messages inside
    tool output)."""
    classifier = Classifier(
        [{"id": "user_ci", "pattern": "disk QUOTA", "class": "ResourceError", "resource": "disk",
          "ignore_case": True}]  # fmt: skip
    )
    for row in read_corpus(Path(__file__).parent / "data" / "corpus_development.tsv"):
        noise = _noise(300)
        at = {"start": 0, "middle": 150, "end": 300, "twice": 100}[where]
        text = "\n".join(noise[:at] + [row.text, "Disk quota reached"] + noise[at:])
        if where == "twice":
            text += "\n" + row.text + "\n"
        window = scan_window(text)
        fast = [(m.pattern.id, m.line_start, m.line, m.error_class) for m in classifier.matches(text)]
        whole = [_last_match(p, window) for p in classifier.patterns]
        assert fast == [(m.pattern.id, m.line_start, m.line, m.error_class) for m in whole if m], row.id


def test_a_prefilter_without_literals_finds_no_candidate_lines():
    """Patterns without required literals (only those: a pack of user patterns) leave the
    prefilter empty; every pattern then searches the whole text."""
    assert Prefilter([]).lines_by_literal("Killed\nout of memory\n") == {}


@pytest.mark.parametrize(
    "text, pos, bounds",
    [
        ("\nabc", 0, (0, 0)),  # an empty first line ends where it starts
        ("ab\ncd", 4, (3, 5)),  # the last line, without a newline: the end of the text
        ("ab\ncd\n", 2, (0, 2)),  # the newline itself belongs to its line
    ],
)
def test_the_line_of_an_offset_is_bounded_by_its_newlines(text, pos, bounds):
    assert line_bounds(text, pos) == bounds
