"""The sessions sheet: parsing, refusals naming the row, and refusal through Snakemake."""

from __future__ import annotations

import pytest

from neuroflow_recover.errors import SheetError
from neuroflow_recover.workflow.sheet import (
    Session,
    job_subjects,
    load_sessions,
    sessions_by_subject,
)
from workflow_study import dry_run, jobs, make_study

HEADER = "participant_id\tsession_id\tdicom_dir\n"


def sheet(tmp_path, body: str, header: str = HEADER, name: str = "sessions.tsv"):
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def refusal(tmp_path, body: str, **kwargs) -> str:
    with pytest.raises(SheetError) as info:
        load_sessions(sheet(tmp_path, body, **kwargs))
    return str(info.value)


def test_rows_become_sessions_in_sheet_order(tmp_path):
    path = sheet(tmp_path, "01\t01\t/data/a\n01\t02\t/data/b\n\nA7\tpre\trel/c\n")
    assert load_sessions(path) == [
        Session("01", "01", "/data/a", 2),
        Session("01", "02", "/data/b", 3),
        Session("A7", "pre", "rel/c", 5),  # the blank line keeps its number
    ]


def test_extra_columns_bom_and_surrounding_spaces_are_accepted(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text(
        "\ufeffsite\tparticipant_id\tsession_id\tdicom_dir\nX\t 02 \t01\t/d/x \n", encoding="utf-8"
    )
    assert load_sessions(path) == [Session("02", "01", "/d/x", 2)]


def test_header_only_sheet_has_no_sessions(tmp_path):
    assert load_sessions(sheet(tmp_path, "")) == []


def test_wildcards_of_a_session():
    assert Session("01", "02", "x", 2).wildcards == {"subject": "01", "session": "02"}


def test_underscore_label_is_refused_naming_the_row(tmp_path):
    message = refusal(tmp_path, "01\t01\ta\n02\t01\tb\nsub_01\t01\tc\n")
    assert "sessions.tsv row 4: participant_id 'sub_01' is not a BIDS label (letters and digits only)" in message


def test_prefixed_labels_are_refused_with_a_hint(tmp_path):
    message = refusal(tmp_path, "sub-01\tses-02\ta\n")
    assert "row 2: participant_id 'sub-01' is not a BIDS label" in message
    assert "write '01' without the 'sub-' prefix" in message
    assert "row 2: session_id 'ses-02' is not a BIDS label" in message
    assert "write '02' without the 'ses-' prefix" in message


@pytest.mark.parametrize("label", ["0 1", "01.5", "é1", "01-a"])
def test_non_alphanumeric_labels_are_refused(tmp_path, label):
    assert "is not a BIDS label" in refusal(tmp_path, f"{label}\t01\ta\n")


def test_empty_values_are_refused(tmp_path):
    message = refusal(tmp_path, "01\t\ta\n02\t01\t\n")
    assert "row 2: session_id is empty" in message
    assert "row 3: dicom_dir is empty" in message


def test_duplicate_session_is_refused_naming_both_rows(tmp_path):
    message = refusal(tmp_path, "01\t01\ta\n02\t01\tb\n01\t01\tc\n")
    assert "row 4: participant_id '01' session_id '01' is already on row 2" in message


def test_duplicate_dicom_directory_is_refused(tmp_path):
    message = refusal(tmp_path, "01\t01\t/d/a\n01\t02\t/d/./a\n")
    assert "row 3: dicom_dir '/d/./a' is already used by row 2" in message


def test_wrong_number_of_fields_is_refused(tmp_path):
    message = refusal(tmp_path, "01\t01\n01 02 /d\n")
    assert "row 2: has 2 field(s), the header has 3" in message
    assert "row 3: has 1 field(s)" in message


def test_missing_column_is_refused(tmp_path):
    message = refusal(tmp_path, "01\t01\n", header="participant_id\tsession_id\n")
    assert "row 1: missing column(s) dicom_dir" in message


def test_comma_separated_sheet_is_refused(tmp_path):
    message = refusal(tmp_path, "01,01,a\n", header="participant_id,session_id,dicom_dir\n")
    assert "missing column(s) participant_id, session_id, dicom_dir" in message


def test_every_problem_is_reported_up_to_a_limit(tmp_path):
    message = refusal(tmp_path, "".join(f"s_{i}\t01\td{i}\n" for i in range(15)))
    assert message.count("is not a BIDS label") == 10
    assert message.endswith("... and 5 more")


def test_missing_and_empty_files_are_refused(tmp_path):
    with pytest.raises(SheetError, match="does not exist"):
        load_sessions(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(SheetError, match="empty file"):
        load_sessions(tmp_path / "empty.tsv")


def test_sessions_by_subject_keeps_sheet_order():
    rows = [Session("02", "01", "a", 2), Session("01", "01", "b", 3), Session("02", "02", "c", 4)]
    assert {k: [s.session for s in v] for k, v in sessions_by_subject(rows).items()} == {
        "02": ["01", "02"],
        "01": ["01"],
    }
    assert list(sessions_by_subject(rows)) == ["02", "01"]


def test_snakemake_refuses_a_bad_sheet_with_our_message(tmp_path):
    study = make_study(tmp_path / "study", 1, 1)
    (study / "sessions.tsv").write_text(HEADER + "01\t01\tdicom/sub-01/ses-01\nsub_02\t01\tdicom/x\n")
    result = dry_run(study)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "SheetError" in output
    assert "sessions.tsv row 3: participant_id 'sub_02' is not a BIDS label (letters and digits only)" in output


# the command line of a SLURM jobstep, as the plugin writes it (fixture slurm_fail, shortened)
JOBSTEP = ("python -m snakemake --snakefile Snakefile --target-jobs probe_fail:subject=01,session=1 "
           "--allowed-rules probe_fail --cores all --attempt 1 --force --mode remote").split()  # fmt: skip


@pytest.mark.parametrize(
    "argv, subjects",
    [
        (JOBSTEP, {"01"}),
        # a group job: several specs after one option, and the `=` form
        (["--target-jobs", "a:subject=01,session=1", "b:session=2,subject=x-2", "--force"], {"01", "x-2"}),
        (["--target-jobs=qsiprep_preprocess:subject=07"], {"07"}),
        (["--target-jobs", "bids_description:", "--force"], None),  # a job without a subject
        (["--target-jobs", "a:subject=01", "b:session=1"], None),
        (["--cores", "1", "all"], None),  # the main process: no target jobs
    ],
)
def test_job_subjects_come_from_the_target_jobs_of_the_command_line(argv, subjects):
    assert job_subjects(argv) == subjects


def test_only_the_rows_of_the_given_subjects_are_read(tmp_path):
    # the other subjects' rows are neither returned nor checked (the main process checks them)
    path = sheet(tmp_path, "01\t01\t/d/a\nbad id\t01\t/d/b\n02\t01\t/d/c\n01\t02\t/d/e\n")
    assert load_sessions(path, subjects={"01"}) == [
        Session("01", "01", "/d/a", 2),
        Session("01", "02", "/d/e", 5),
    ]
    assert load_sessions(path, subjects={"02"}) == [Session("02", "01", "/d/c", 4)]
    assert "bad id" in refusal(tmp_path, "01\t01\t/d/a\nbad id\t01\t/d/b\n")


def test_a_subjects_rows_are_found_in_any_column_order_spacing_and_line_ending(tmp_path):
    """The lines of the other subjects are skipped unparsed: what is read must be what the
    whole sheet gives for these subjects, row numbers included."""
    path = tmp_path / "s.tsv"
    path.write_bytes(
        b"session_id\tparticipant_id\tdicom_dir\r\n"
        b"01\t1\t/d/a\r\n"
        b"01\t10\t/d/b\r\n"  # 1 is a prefix of 10
        b"\r\n"
        b"02\t 1 \t/d/c\r\n"  # spaces around the label
        b"01\t\t1\t/d/x\r\n"  # a tab too many: 1 is the third field, not participant_id
        b"03\t1\t/d/e"  # no line end
    )
    with pytest.raises(SheetError):
        load_sessions(path)  # the row with a tab too many
    assert load_sessions(path, subjects={"1"}) == [
        Session("1", "01", "/d/a", 2), Session("1", "02", "/d/c", 5), Session("1", "03", "/d/e", 7),
    ]  # fmt: skip
    assert load_sessions(path, subjects={"10", "9"}) == [Session("10", "01", "/d/b", 3)]
    assert load_sessions(path, subjects=set()) == []


def test_a_job_process_plans_its_job_from_its_subject_rows_alone(tmp_path):
    """A jobstep's dry run (remote mode, --target-jobs) plans the same QSIPrep command as the
    main process, although it reads the sheet's rows of that subject only."""
    root = make_study(tmp_path / "study", subjects=3, sessions=2)
    main = dry_run(root, "--until", "qsiprep_preprocess")
    assert main.returncode == 0, main.stderr
    expected = [j for j in jobs(main.stdout) if j["rule"] == "qsiprep_preprocess"
                and j["wildcards"] == {"subject": "02"}]  # fmt: skip
    # the other subjects' rows broken: only the main process would notice
    rows = (root / "sessions.tsv").read_text().splitlines()
    (root / "sessions.tsv").write_text("\n".join(rows[:1] + [r.replace("\t", " ", 1) if not r.startswith("02\t") else r for r in rows[1:]]) + "\n")
    job = dry_run(root, "--target-jobs", "qsiprep_preprocess:subject=02", "--allowed-rules",
                  "qsiprep_preprocess", "--force", "--mode", "remote")  # fmt: skip
    assert job.returncode == 0, job.stderr
    planned = jobs(job.stdout)
    assert [j["shell"] for j in planned] == [j["shell"] for j in expected] and len(planned) == 1
    assert dry_run(root).returncode != 0  # the main process refuses the broken rows
