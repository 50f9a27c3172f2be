"""Labelled failure messages (TSV corpora) and how well a classifier scores on them."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ConfigError
from .classes import ERROR_CLASSES, NON_RETRYABLE, RESOURCES
from .classifier import Classification, Classifier

COLUMNS = ("id", "exit_code", "expected_class", "expected_resource", "text", "source", "tool")


@dataclass(frozen=True)
class CorpusRow:
    """One real failure message with the class (and resource) it should get."""

    id: str
    exit_code: int | None
    expected_class: str
    expected_resource: str | None
    text: str
    source: str
    tool: str

    @property
    def expected_retryable(self) -> bool:
        return self.expected_class not in NON_RETRYABLE


def _row(raw: dict, where: str) -> CorpusRow:
    missing = [c for c in COLUMNS if raw.get(c) is None]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {', '.join(missing)}")
    code = raw["exit_code"].strip()
    try:
        exit_code = int(code) if code else None
    except ValueError:
        raise ConfigError(f"{where}: exit_code must be an integer or empty, got {code!r}") from None
    cls, res = raw["expected_class"].strip(), raw["expected_resource"].strip() or None
    if cls not in ERROR_CLASSES or (res is not None and (cls != "ResourceError" or res not in RESOURCES)):
        raise ConfigError(f"{where}: invalid expected class/resource {cls!r}/{res!r}")
    return CorpusRow(raw["id"].strip(), exit_code, cls, res, raw["text"], raw["source"].strip(), raw["tool"].strip())


def read_corpus(path: str | os.PathLike) -> list[CorpusRow]:
    """The rows of a corpus TSV (columns COLUMNS; multi-line texts quoted)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [_row(raw, f"{os.fspath(path)} row {n}") for n, raw in enumerate(csv.DictReader(fh, delimiter="\t"), 2)]
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{os.fspath(path)}: duplicate ids")
    return rows


@dataclass(frozen=True)
class Outcome:
    row: CorpusRow
    got: Classification

    @property
    def class_right(self) -> bool:
        """The class, and for a ResourceError also the resource, as expected."""
        return (self.got.error_class, self.got.resource) == (self.row.expected_class, self.row.expected_resource)

    @property
    def retry_right(self) -> bool:
        return self.got.retryable == self.row.expected_retryable


@dataclass
class Score:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def class_right(self) -> int:
        return sum(o.class_right for o in self.outcomes)

    @property
    def retry_right(self) -> int:
        return sum(o.retry_right for o in self.outcomes)

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.class_right]


def evaluate(rows: Iterable[CorpusRow], classifier: Classifier) -> Score:
    """Classify every row (its text and exit code) and compare with its label."""
    return Score([Outcome(row, classifier.classify(row.text, exit_code=row.exit_code)) for row in rows])
