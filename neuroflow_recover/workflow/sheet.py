"""The sessions sheet: one row per scan session (TSV: participant_id, session_id, dicom_dir).

Rows are checked against ``workflow/schemas/sessions.schema.yaml``. Labels are BIDS labels
without their prefix (letters and digits only): ``sub-01`` or ``sub_01`` is refused with a
message naming the row, never silently rewritten. A (participant, session) pair and a DICOM
directory may appear once. Row numbers are the file's line numbers (the header is row 1),
as a spreadsheet shows them. DICOM directories are not looked at here (Snakemake checks
them as inputs of the jobs it schedules).
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import NeuroflowError, SheetError
from ..logsetup import get_logger
from .config import load_schema

log = get_logger(__name__)

SESSIONS_SCHEMA = "sessions.schema.yaml"
COLUMNS = ("participant_id", "session_id", "dicom_dir")
MAX_REPORTED_ERRORS = 10
_PREFIX = {"participant_id": "sub-", "session_id": "ses-"}


@dataclass(frozen=True)
class Session:
    subject: str  # BIDS label without "sub-"
    session: str  # BIDS label without "ses-"
    dicom_dir: str  # as written in the sheet
    row: int  # line number in the sheet (header = 1)

    @property
    def wildcards(self) -> dict[str, str]:
        return {"subject": self.subject, "session": self.session}


def load_sessions(
    path: str | os.PathLike,
    workdir: str | os.PathLike = ".",
    schema_dir: str | os.PathLike | None = None,
    subjects: Collection[str] | None = None,
) -> list[Session]:
    """Every session of the sheet, in sheet order; SheetError naming the rows otherwise.

    ``workdir``/``schema_dir`` only locate the schema (see config.schema_path); a relative
    ``path`` is relative to the current directory. ``subjects``: only their rows are read
    (the others are neither checked nor returned).
    """
    import jsonschema

    path = Path(path)
    rows = _read_rows(path, subjects)
    schema = load_schema(SESSIONS_SCHEMA, workdir, schema_dir)
    validator = jsonschema.Draft202012Validator(schema)
    quick = _quick_check(schema)
    header, body = rows[0][1], rows[1:]
    problems: list[str] = []
    sessions: list[Session] = []
    seen_pair: dict[tuple[str, str], int] = {}
    seen_dir: dict[str, int] = {}
    for line, values in body:
        if len(values) != len(header):
            problems.append(
                f"{path} row {line}: has {len(values)} field(s), the header has {len(header)} "
                "(fields are separated by one TAB)"
            )
            continue
        record = dict(zip(header, (v.strip() for v in values)))
        if not quick(record) and not validator.is_valid(record):
            problems.extend(
                f"{path} row {line}: {_describe(error)}"
                for error in sorted(validator.iter_errors(record), key=lambda e: list(e.path))
            )
            continue
        pair = (record["participant_id"], record["session_id"])
        if pair in seen_pair:
            problems.append(
                f"{path} row {line}: participant_id {pair[0]!r} session_id {pair[1]!r} "
                f"is already on row {seen_pair[pair]}"
            )
            continue
        dicom_key = os.path.normpath(record["dicom_dir"])
        if dicom_key in seen_dir:
            problems.append(
                f"{path} row {line}: dicom_dir {record['dicom_dir']!r} is already used "
                f"by row {seen_dir[dicom_key]}"
            )
            continue
        seen_pair[pair] = line
        seen_dir[dicom_key] = line
        sessions.append(Session(pair[0], pair[1], record["dicom_dir"], line))
    if problems:
        shown = problems[:MAX_REPORTED_ERRORS]
        more = len(problems) - len(shown)
        raise SheetError("\n".join(shown) + (f"\n... and {more} more" if more > 0 else ""))
    return sessions


def _quick_check(schema: dict):
    """A fast check that accepts only rows the schema accepts (its required string columns,
    their patterns and minimal lengths); anything else goes to jsonschema, which is ~20x
    slower per row and also words the message. Other keywords: always jsonschema."""
    known = {"$schema", "title", "description", "type", "required", "properties"}
    columns = schema.get("properties", {})
    simple = {"description", "type", "pattern", "minLength"}
    if set(schema) - known or any(set(c) - simple for c in columns.values()):
        return lambda record: False
    checks = [
        (name, re.compile(c["pattern"]) if "pattern" in c else None, c.get("minLength", 0))
        for name, c in columns.items()
        if c.get("type") == "string"
    ]
    required = list(schema.get("required", []))

    def quick(record: dict) -> bool:
        if any(name not in record for name in required):
            return False
        return all(
            name not in record
            or (len(record[name]) >= min_length and (rx is None or rx.search(record[name])))
            for name, rx, min_length in checks
        )

    return quick


def _read_rows(path: Path, subjects: Collection[str] | None = None) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the header and every non-blank line (with `subjects`: only
    the lines of those participants)."""
    rows: list[tuple[int, list[str]]] = []
    column = None  # of participant_id, once the header is read
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = _Lines(handle)
            reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if not rows:  # the header
                    names = [f.strip() for f in fields]
                    if subjects is not None and "participant_id" in names:
                        column = names.index("participant_id")
                        lines.keep = _subject_lines(column, subjects)
                elif column is not None and (len(fields) <= column or fields[column].strip() not in subjects):
                    continue
                rows.append((lines.number, fields))
    except FileNotFoundError:
        raise SheetError(f"sessions sheet {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SheetError(f"sessions sheet {path} cannot be read: {exc}") from None
    if not rows:
        raise SheetError(f"{path}: empty file; the first line must be the header {_header()}")
    header = [h.strip() for h in rows[0][1]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SheetError(
            f"{path} row {rows[0][0]}: missing column(s) {', '.join(missing)} "
            f"in the header (expected {_header()}, TAB-separated)"
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise SheetError(f"{path} row {rows[0][0]}: duplicate column(s) {', '.join(duplicated)}")
    return [(rows[0][0], header)] + rows[1:]


class _Lines:
    """The lines of a sheet for csv.reader: all of them, or only those `keep` matches once it
    is set; `number` is the line number of the last one given (a row is one line: no quoting)."""

    def __init__(self, handle) -> None:
        self.handle, self.keep, self.number = handle, None, 0

    def __iter__(self):
        for self.number, line in enumerate(self.handle, start=1):
            if self.keep is None or self.keep(line):
                yield line


def _subject_lines(column: int, subjects: Collection[str]):
    """A match of the lines whose field `column` may be one of `subjects` (a superset: the
    fields decide): a job's own Snakemake reads its subject's rows of a 100,000-line sheet
    without parsing the others (~0.2 s -> ~0.06 s)."""
    labels = "|".join(re.escape(subject) for subject in sorted(subjects)) or "(?!)"
    return re.compile(rf"(?:[^\t]*\t){{{column}}}\s*(?:{labels})\s*(?:\t|$)").match


def _header() -> str:
    return "\\t".join(COLUMNS)


def _describe(error) -> str:
    column = error.path[0] if error.path else None
    value = error.instance
    if error.validator == "required":
        missing = [c for c in error.validator_value if c not in error.instance]
        return f"missing {', '.join(missing)}"
    if error.validator == "pattern" and column in _PREFIX:
        prefix = _PREFIX[column]
        hint = ""
        if value.lower().startswith(prefix) and value[len(prefix) :].isalnum():
            hint = f"; write {value[len(prefix):]!r} without the {prefix!r} prefix"
        if value == "":
            return f"{column} is empty"
        return f"{column} {value!r} is not a BIDS label (letters and digits only{hint})"
    if error.validator == "minLength":
        return f"{column} is empty"
    return f"{column}: {error.message}"


def sessions_by_subject(sessions: list[Session]) -> dict[str, list[Session]]:
    """Subject -> its sessions, in sheet order (subjects in order of first appearance)."""
    grouped: dict[str, list[Session]] = defaultdict(list)
    for session in sessions:
        grouped[session.subject].append(session)
    return dict(grouped)


def study_sessions(workdir: str | os.PathLike, cfg: dict) -> list[Session] | None:
    """The sheet of a study's config (relative to `workdir`), or None with a warning when it
    cannot be read: a recovery command then targets the failed jobs' own outputs only."""
    sheet = cfg.get("sessions") if isinstance(cfg, dict) else None
    if not sheet:
        return None
    path = Path(sheet)
    if not path.is_absolute():
        path = Path(workdir) / path
    try:
        return load_sessions(path)
    except (NeuroflowError, OSError) as exc:
        log.warning(
            "cannot read the sessions sheet; targets are the failed jobs' outputs only",
            path=str(path),
            error=str(exc),
        )
        return None


def job_subjects(argv: Sequence[str]) -> set[str] | None:
    """The subjects of the jobs a Snakemake job process runs (`--target-jobs
    rule:subject=S,...` on its command line), or None when any job has no subject (or the
    command line has no target jobs): such a process needs the whole sheet."""
    specs, taking = [], False
    for arg in argv:  # --target-jobs SPEC [SPEC ...] (a group job has several)
        if arg.startswith("--target-jobs="):
            specs.append(arg.split("=", 1)[1])
        taking = arg == "--target-jobs" or (taking and not arg.startswith("-"))
        if taking and arg != "--target-jobs":
            specs.append(arg)
    subjects = set()
    for spec in specs:
        wildcards = dict(pair.split("=", 1) for pair in spec.partition(":")[2].split(",") if "=" in pair)
        if "subject" not in wildcards:
            return None
        subjects.add(wildcards["subject"])
    return subjects or None
