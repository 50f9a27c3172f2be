"""The error classifier: failure text (+ exit code, SLURM state) -> class, resource, evidence.

Precedence, patterns and the scanned window: docs/architecture.md, "Classification".
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import IO

from .. import environment
from ..errors import ConfigError, LogReadError
from ..files import decode, regular_file_problem
from ..logsetup import get_logger
from .classes import DEFAULT_CLASS, ERROR_CLASSES, NON_RETRYABLE, RESOURCES
from .patterns import FROM_MATCH, Pattern, PatternPack, parse_pattern, parse_patterns, shipped_pack
from .prefilter import Prefilter, candidate_lines, line_bounds, line_local

log = get_logger(__name__)

EVIDENCE_MAX = 500  # characters of the evidence line kept
HEAD_BYTES = 64 * 1024  # scanned from the start of a big text
TAIL_BYTES = 4 * 1024 * 1024  # scanned from the end of a big text
STREAM_CHUNK = 1 << 20
MAX_STREAM_BYTES = 1 << 30  # read from a pipe at most (only its head and tail are kept)
PATTERN_TIMEOUT_S = 2.0  # one user pattern on one text (env NEUROFLOW_PATTERN_TIMEOUT)


@dataclass(frozen=True)
class Classification:
    error_class: str  # one of ERROR_CLASSES
    retryable: bool
    resource: str | None = None  # memory | runtime | disk, for ResourceError
    pattern_id: str | None = None  # pattern id, "exit:<code>", "slurm:<STATE>", None = default
    evidence: str | None = None  # the line that matched

    def to_dict(self) -> dict:
        return asdict(self)


def make_classification(
    error_class: str,
    resource: str | None = None,
    pattern_id: str | None = None,
    evidence: str | None = None,
) -> Classification:
    """A Classification with `retryable` derived from the class (not in NON_RETRYABLE)."""
    return Classification(
        error_class=error_class,
        retryable=error_class not in NON_RETRYABLE,
        resource=resource if error_class == "ResourceError" else None,
        pattern_id=pattern_id,
        evidence=evidence,
    )


# ----------------------------------------------------------------------------- scanning


def normalize_slurm_state(state: str | None) -> str | None:
    """'CANCELLED by 0' -> 'CANCELLED', 'out_of_me+' -> 'OUT_OF_MEMORY' (sacct truncation)."""
    if not state or not state.strip():
        return None
    token = state.strip().split()[0].upper().rstrip("+")
    if token.startswith("OUT_OF_ME"):
        return "OUT_OF_MEMORY"
    return token


def scan_window(text: str, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> str:
    """The part of `text` that is scanned: all of it, or its head and its tail."""
    if len(text) <= head + tail:
        return text
    head_part = text[:head]
    head_part = head_part[: head_part.rfind("\n") + 1] or head_part  # whole lines only
    tail_part = text[-tail:]
    cut = tail_part.find("\n")
    tail_part = tail_part[cut + 1 :] if cut >= 0 else tail_part
    return head_part + "\n" + tail_part


def read_window(stream: IO[bytes], head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> str:
    """Read the scanned window of a binary stream: seeks on regular files; a pipe (or a
    device) is read to its end keeping only its head and a rolling tail, up to
    MAX_STREAM_BYTES (LogReadError beyond: /dev/zero never ends)."""
    if not _is_regular(stream):
        return _stream_window(stream, head, tail)
    size = stream.seek(0, 2)
    stream.seek(0)
    if size <= head + tail:
        return decode(stream.read())
    first = stream.read(head)
    stream.seek(size - tail)
    last = stream.read(tail)
    return scan_window(decode(first) + "\n" + decode(last), head, tail)


def _is_regular(stream: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        try:  # an in-memory stream (BytesIO) seeks like a file
            stream.seek(0, 2)
            stream.seek(0)
            return True
        except (OSError, ValueError, AttributeError):
            return False


def _stream_window(stream: IO[bytes], head: int, tail: int) -> str:
    first = stream.read(head)
    last = bytearray()
    total = len(first)
    while chunk := stream.read(STREAM_CHUNK):
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise LogReadError(
                f"more than {MAX_STREAM_BYTES >> 20} MiB on a pipe (classify reads at most "
                "that much from one; give the log as a file)"
            )
        last += chunk
        if len(last) > 2 * tail:
            del last[:-tail]
    if total <= head + tail:  # all of it (what is kept of a longer stream is not contiguous)
        return decode(first + bytes(last))
    return scan_window(decode(first) + "\n" + decode(bytes(last[-tail:])), head, tail)


class PatternTimeout(ConfigError):
    """A user pattern searched one text for longer than its time limit."""


def pattern_timeout_s() -> float:
    return environment.non_negative(environment.PATTERN_TIMEOUT, PATTERN_TIMEOUT_S,
                                    "a number of seconds")  # fmt: skip


def _search(pattern: Pattern, rx, text: str, pos: int, deadline: float | None):
    """`rx.search(text, pos)`, within the user pattern's time limit."""
    if deadline is None:
        return rx.search(text, pos)
    try:
        return rx.search(text, pos, timeout=max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        raise PatternTimeout(
            f"user pattern {pattern.id!r} ({pattern.regex!r}) did not finish within "
            f"{pattern_timeout_s():g} s on this text: it backtracks catastrophically "
            "(overlapping repeats such as (a|aa)+); rewrite it (limit: env "
            "NEUROFLOW_PATTERN_TIMEOUT)"
        ) from None


@dataclass(frozen=True)
class Match:
    pattern: Pattern
    line_start: int  # offset of the line in the scanned text (later = larger)
    line: str
    error_class: str
    resource: str | None


def _resolve(pattern: Pattern, m: re.Match) -> tuple[str, str | None] | None:
    if pattern.error_class != FROM_MATCH:
        return pattern.error_class, pattern.resource
    groups = m.groupdict()
    cls = groups.get("class")
    if cls not in ERROR_CLASSES:
        return None
    res = groups.get("resource")
    return cls, (res if cls == "ResourceError" and res in RESOURCES else None)


def _last_match(pattern: Pattern, text: str) -> Match | None:
    """The last line of `text` on which `pattern` matches (one search per matching line)."""
    if not pattern.may_match(text):
        return None
    rx = pattern.compiled
    deadline = time.monotonic() + pattern_timeout_s() if pattern.user else None
    found: Match | None = None
    pos = 0
    n = len(text)
    while pos <= n:
        m = _search(pattern, rx, text, pos, deadline)
        if m is None:
            break
        start, end = line_bounds(text, m.start())
        if m.end() > end:  # the regex ran over a line end: re-check the line alone
            m = _search(pattern, rx, text[start:end], 0, deadline)
        if m is not None:
            resolved = _resolve(pattern, m)
            if resolved is not None:
                found = Match(pattern, start, text[start:end], *resolved)
        pos = end + 1
    return found


def _last_match_in(pattern: Pattern, text: str, lines: dict) -> Match | None:
    """`_last_match` on the lines that hold one of the pattern's literals (Prefilter)."""
    if not line_local(pattern):
        return _last_match(pattern, text)
    candidates = candidate_lines(pattern, lines, text)
    if candidates is None:
        return None
    m = _last_match(pattern, candidates.text)
    return None if m is None else replace(m, line_start=candidates.origin(m.line_start))


def _best(matches: list[Match]) -> Match | None:
    """Highest priority, then the latest line; on a tie the earlier-listed pattern."""
    best: Match | None = None
    for m in matches:  # in pattern order (user patterns first)
        if best is None or (m.pattern.priority, m.line_start) > (best.pattern.priority, best.line_start):
            best = m
    return best


STATE, PATTERN, EXIT_CODE, DEFAULT = "slurm_state", "pattern", "exit_code", "default"


@dataclass(frozen=True)
class ExplainedMatch:
    """One pattern that matched: where, with which class, and where the pattern comes from."""

    pattern_id: str
    error_class: str
    resource: str | None
    priority: int
    line_number: int  # in the scanned text (its head and tail when the text is big)
    line: str
    tool: str | None
    source: str | None
    user: bool


@dataclass(frozen=True)
class Explanation:
    classification: Classification
    decided_by: str  # slurm_state | pattern | exit_code | default
    reason: str
    matches: tuple[ExplainedMatch, ...]  # highest priority first, then the later line

    def to_dict(self) -> dict:
        return {**self.classification.to_dict(), "decided_by": self.decided_by, "reason": self.reason,
                "matches": [asdict(m) for m in self.matches]}


def _explained(m: Match, window: str) -> ExplainedMatch:
    p = m.pattern
    return ExplainedMatch(p.id, m.error_class, m.resource, p.priority, window.count("\n", 0, m.line_start) + 1,
                          _evidence(m.line), p.tool, p.source, p.user)


def _named(m: Match) -> str:
    return f"{m.pattern.id} ({m.error_class}{'/' + m.resource if m.resource else ''}, priority {m.pattern.priority})"


def _reason(decided_by, winner, ranked, exit_code, state) -> str:
    """Why the classification won, in one or two sentences."""
    if decided_by == STATE:
        how = f"its evidence is the best line of that class ({winner.pattern.id})" if winner else "no line has that class"
        return f"the SLURM state {state} has a class of its own and wins over every pattern; {how}"
    if decided_by == EXIT_CODE:
        return f"no pattern matched; the rule for exit code {exit_code} decides"
    if decided_by == DEFAULT:
        code = f"exit code {exit_code} has no rule" if exit_code is not None else "no exit code is known"
        return (f"no pattern matched and {code}: the failure is unknown (retried; stopped when the "
                "next attempt fails the same way)")
    others = [m for m in ranked if m is not winner]
    if not others:
        return f"{winner.pattern.id} is the only pattern that matched"
    equal = [m for m in others if m.pattern.priority == winner.pattern.priority]
    if not equal:
        return (f"{winner.pattern.id} has the highest priority ({winner.pattern.priority}); "
                f"lower: {', '.join(_named(m) for m in others)}")
    rivals = ", ".join(_named(m) for m in equal)
    if all(m.line_start < winner.line_start for m in equal):
        return (f"{winner.pattern.id} shares priority {winner.pattern.priority} with {rivals}; "
                "among equal priorities the last matching line wins (the final error usually comes last)")
    return (f"{winner.pattern.id} shares priority {winner.pattern.priority} with {rivals} on the same "
            "line; there the pattern listed first wins (user patterns before shipped ones)")


def _evidence(line: str) -> str:
    line = line.strip()
    return line if len(line) <= EVIDENCE_MAX else line[: EVIDENCE_MAX - 3] + "..."


class Classifier:
    """Classify failure text with the shipped pattern pack plus optional user patterns."""

    def __init__(
        self,
        extra_patterns: Iterable[Pattern | Mapping] | None = None,
        pack: PatternPack | None = None,
        *,
        strict: bool = False,
    ):
        # strict: a user pattern over its time limit raises PatternTimeout (`classify`);
        # otherwise it is skipped with a warning (a job or a retry never waits on it)
        self.strict = strict
        self.pack = pack or shipped_pack()
        user: list[Pattern] = []
        for i, p in enumerate(extra_patterns or ()):
            user.append(p if isinstance(p, Pattern) else parse_pattern(p, f"extra_patterns[{i}]", user=True))
        ids = [p.id for p in user]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"duplicate user pattern id(s): {', '.join(dupes)}")
        # user patterns first: on the same line and priority the first listed wins
        self.patterns: tuple[Pattern, ...] = (*user, *self.pack.patterns)
        self.prefilter = Prefilter(self.patterns)

    @classmethod
    def from_config(cls, cfg: Mapping | None, *, strict: bool = False) -> Classifier:
        """A classifier with the config's `error_handling.patterns` checked first."""
        section = (cfg or {}).get("error_handling") or {}
        if not isinstance(section, Mapping):
            raise ConfigError("error_handling: must be a mapping")
        patterns = parse_patterns(section.get("patterns"), "error_handling.patterns", user=True)
        return cls(patterns, strict=strict)

    def matches(self, text: str) -> list[Match]:
        """Every pattern's last matching line in the scanned window of `text`."""
        return self._matches_in(scan_window(text))

    def _matches_in(self, window: str) -> list[Match]:
        found = []
        lines = self.prefilter.lines_by_literal(window)
        for pattern in self.patterns:
            try:
                m = _last_match_in(pattern, window, lines)
            except PatternTimeout as exc:
                if self.strict:
                    raise
                log.warning("user pattern skipped", error=str(exc))
                continue
            if m is not None:
                found.append(m)
        return found

    def best_match(self, text: str) -> Match | None:
        """The winning pattern match of `text` (highest priority, then the last line)."""
        return _best(self.matches(text))

    def classify(
        self,
        text: str | bytes | None,
        exit_code: int | None = None,
        slurm_state: str | None = None,
    ) -> Classification:
        """Classify failure text (precedence: docs/architecture.md, "Classification")."""
        return self._decide(self.matches(decode(text or "")), exit_code, slurm_state)[0]

    def _decide(self, found: list[Match], exit_code: int | None, slurm_state: str | None):
        """(classification, what decided it, the deciding match) for the matches ``found``."""
        state = normalize_slurm_state(slurm_state)
        rule = self.pack.slurm_states.get(state) if state else None
        if rule is not None:
            support = _best([m for m in found if (m.error_class, m.resource) == (rule.error_class, rule.resource)])
            evidence = _evidence(support.line) if support else f"SLURM state: {state}"
            return make_classification(rule.error_class, rule.resource, f"slurm:{state}", evidence), STATE, support

        best = _best(found)
        if best is not None:
            found_class = make_classification(best.error_class, best.resource, best.pattern.id, _evidence(best.line))
            return found_class, PATTERN, best

        code_rule = self.pack.exit_codes.get(int(exit_code)) if exit_code is not None else None
        if code_rule is not None:
            code = int(exit_code)
            return make_classification(code_rule.error_class, code_rule.resource, f"exit:{code}", f"exit code {code}"), EXIT_CODE, None
        return make_classification(DEFAULT_CLASS), DEFAULT, None

    def explain(
        self, text: str | bytes | None, exit_code: int | None = None, slurm_state: str | None = None
    ) -> Explanation:
        """The classification with every matching pattern and why the winner won."""
        window = scan_window(decode(text or ""))
        found = self._matches_in(window)
        result, decided_by, winner = self._decide(found, exit_code, slurm_state)
        order = {p.id: i for i, p in enumerate(self.patterns)}
        ranked = sorted(found, key=lambda m: (-m.pattern.priority, -m.line_start, order[m.pattern.id]))
        listed = tuple(_explained(m, window) for m in ranked)
        reason = _reason(decided_by, winner, ranked, exit_code, normalize_slurm_state(slurm_state))
        return Explanation(result, decided_by, reason, listed)

    def classify_stream(
        self, stream: IO[bytes], exit_code: int | None = None, slurm_state: str | None = None
    ) -> Classification:
        """Classify a binary stream (a file or stdin), reading only the scanned window."""
        return self.classify(read_window(stream), exit_code=exit_code, slurm_state=slurm_state)


@functools.lru_cache(maxsize=1)
def default_classifier() -> Classifier:
    """The classifier with the shipped pack only (compiled once per process)."""
    return Classifier()


def classifier_for(cfg: Mapping | None) -> Classifier:
    """The classifier of a workflow config; the shipped one, with a warning, when the
    config's patterns are unusable: a config problem must never block a job or a retry."""
    if cfg:
        try:
            return Classifier.from_config(cfg)
        except (ConfigError, TypeError, AttributeError) as exc:
            log.warning("config patterns unusable, shipped patterns only", error=str(exc))
    return default_classifier()


def classify(
    text: str | bytes | None, exit_code: int | None = None, slurm_state: str | None = None
) -> Classification:
    """Classify with the shipped pattern pack (see Classifier.classify)."""
    return default_classifier().classify(text, exit_code=exit_code, slurm_state=slurm_state)


def classify_input(
    source: str | os.PathLike | IO[bytes],
    exit_code: int | None = None,
    slurm_state: str | None = None,
    cfg: Mapping | None = None,
    explain: bool = False,
) -> Classification | Explanation:
    """Classify a log file (path) or a binary stream (stdin) as the step runner would, with
    the user patterns of `cfg` when given; with ``explain`` the Explanation. An unreadable
    file raises LogReadError."""
    classifier = Classifier.from_config(cfg, strict=True) if cfg else default_classifier()
    decide = classifier.explain if explain else classifier.classify
    if hasattr(source, "read"):
        return decide(read_window(source), exit_code=exit_code, slurm_state=slurm_state)
    problem = regular_file_problem(source)
    if problem is not None:  # a FIFO blocks, a device may never end: pipes go through `-`
        hint = "" if problem in ("no such file", "not a regular file (a directory)") else (
            "; pipe it into `neuroflow-recover classify -` instead"
        )
        raise LogReadError(f"cannot read {os.fspath(source)}: {problem}{hint}")
    try:
        with open(source, "rb") as stream:
            text = read_window(stream)
    except OSError as exc:
        raise LogReadError(f"cannot read {os.fspath(source)}: {exc.strerror or exc}") from None
    return decide(text, exit_code=exit_code, slurm_state=slurm_state)
