"""Error classifier: text (+ exit code, SLURM state) -> error class, resource and evidence.

The classes are the seed's (docs/error-handling-seed.md): TransientError, ResourceError,
ValidationError, ConfigurationError, NonRetryableError, RetryableError. The patterns are
data in ``patterns.yaml`` (shipped) plus ``error_handling.patterns`` from the config (user
patterns, checked first).

Precedence ("the most specific evidence wins")
-----------------------------------------------
1. An explicit SLURM state with a meaning: OUT_OF_MEMORY -> ResourceError/memory,
   TIMEOUT and DEADLINE -> ResourceError/runtime, NODE_FAIL, PREEMPTED, BOOT_FAIL ->
   TransientError (``pattern_id`` ``slurm:<STATE>``). FAILED, CANCELLED, COMPLETED, ERROR
   and unknown states carry no class and fall through. The evidence is the best matching
   text line of the same class when there is one, else ``SLURM state: <STATE>``.
2. Text patterns, matched one line at a time. The highest ``priority`` wins (user patterns
   default to 1000, then neuroflow's own messages 100, scheduler lines 90, tool-specific
   messages 70, operating-system errors 50, generic words such as a bare ``Killed`` or
   ``Timeout`` 10-20; the scale is documented in patterns.yaml). Among matches of equal
   priority the LAST matching line wins (the final error usually comes last); on the same
   line, the pattern listed first (user patterns before shipped ones).
3. The exit code (``exit:<code>``): 137/-9 -> ResourceError/memory (SIGKILL, the OOM
   killer: scancel and time limits are visible in the SLURM state or log and win above);
   124 -> ResourceError/runtime (GNU ``timeout`` killed the tool: a runtime limit, not the
   seed's TransientError); 126/127 -> ConfigurationError; 1 and 2 -> NonRetryableError
   (the seed's rule, kept only as this last resort because exit 1 is what every Python
   exception gives).
4. Otherwise RetryableError with no pattern (``pattern_id`` None).

``Classification.evidence`` is the whole matching line, stripped and capped at
``EVIDENCE_MAX`` characters.

Big logs
--------
Only a window of the text is scanned: the first ``HEAD_BYTES`` (64 KiB) and the last
``TAIL_BYTES`` (4 MiB) when the text is longer than both together; startup errors (licence,
image, bind mounts) come first, the final error comes last. Every regex is compiled once per
``Classifier`` and searched over the window (the regex engine skips non-matching text in C),
at most one hit per line and pattern.

Messages the step runner emits (the exact wording this module recognises)
-------------------------------------------------------------------------
* The tool exited 0 but a promised output is missing -> ValidationError
  (pattern ``neuroflow_missing_outputs``, priority 45: a real cause printed by the tool,
  e.g. "No space left on device", wins over it)::

      neuroflow: <tool> exited 0 but did not write: <path>[, <path> ...]

  Build it with :func:`format_missing_outputs`.
* Fail-fast: the tool is not started because the previous attempt failed with a
  non-retryable class -> that same class (and resource), pattern ``neuroflow_not_starting``,
  priority 100::

      neuroflow: not starting <rule> attempt <n>: attempt <n-1> failed with <Class>[/<resource>]: <evidence>

  Build it with :func:`format_not_starting`. Both lines must start at the beginning of a line.
* Also recognised (so re-classifying a rule log gives the step runner's verdict): its summary
  ``neuroflow: <rule> attempt <n> failed (exit <code>): <Class>[/<resource>] [<pattern>]: ...``
  (that class, priority 100), ``neuroflow: cannot start <tool>: ...`` (ConfigurationError)
  and ``neuroflow: <tool> interrupted by SIG<NAME> ... (not a time limit)`` (TransientError);
  its time-limit line carries SLURM's words ``DUE TO TIME LIMIT`` (ResourceError/runtime).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import IO, Any

import yaml

from .errors import ConfigError, NeuroflowError

ERROR_CLASSES = (
    "TransientError",
    "ResourceError",
    "ValidationError",
    "ConfigurationError",
    "NonRetryableError",
    "RetryableError",
)
NON_RETRYABLE = frozenset({"ValidationError", "ConfigurationError", "NonRetryableError"})
RESOURCES = ("memory", "runtime", "disk")

DEFAULT_CLASS = "RetryableError"
FROM_MATCH = "from_match"  # pattern class taken from the regex's named group `class`
USER_PRIORITY = 1000  # default priority of user patterns (checked before the shipped pack)
EVIDENCE_MAX = 500  # characters of the evidence line kept
HEAD_BYTES = 64 * 1024  # scanned from the start of a big text
TAIL_BYTES = 4 * 1024 * 1024  # scanned from the end of a big text
PACK_RESOURCE = "patterns.yaml"
DEFAULT_CONFIGFILE = "config/config.yaml"  # as config.DEFAULT_CONFIGFILE


class LogReadError(NeuroflowError):
    """The text to classify cannot be read (missing file, a directory, no permission)."""


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


# ----------------------------------------------------------------------------- step runner


def format_missing_outputs(tool: str, missing: Iterable[str], limit: int = 5) -> str:
    """The step runner's line for a tool that exited 0 without writing its outputs."""
    paths = [str(p) for p in missing]
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        shown += f", ... ({len(paths) - limit} more)"
    return f"neuroflow: {tool} exited 0 but did not write: {shown}"


def format_not_starting(rule: str, attempt: int, previous: Classification) -> str:
    """The step runner's fail-fast line: attempt `attempt` is skipped because of `previous`."""
    cause = previous.error_class
    if previous.resource:
        cause += f"/{previous.resource}"
    evidence = " ".join((previous.evidence or "no evidence").split())
    return (
        f"neuroflow: not starting {rule} attempt {attempt}: "
        f"attempt {attempt - 1} failed with {cause}: {evidence}"
    )


# ----------------------------------------------------------------------------- patterns


MIN_HINT = 3  # shortest literal worth a pre-check


def _literal_run(items) -> str:
    """The longest run of consecutive literal characters in a parsed sequence."""
    from re import _constants as c  # noqa: PLC0415 - CPython's parser constants

    best = cur = ""
    for op, arg in items:
        if op is c.LITERAL:
            cur += chr(arg)
            best = max(best, cur, key=len)
        elif op is c.SUBPATTERN and len(arg[-1]) == 1 and arg[-1][0][0] is c.LITERAL:
            cur += chr(arg[-1][0][1])  # a one-character group: still a literal
            best = max(best, cur, key=len)
        else:
            cur = ""
    return best


def _sequence_hints(items) -> tuple[str, ...] | None:
    """Literals one of which a match of the parsed sequence `items` must contain."""
    from re import _constants as c  # noqa: PLC0415

    run = _literal_run(items)
    if len(run) >= MIN_HINT:
        return (run,)
    for op, arg in items:  # a required group or alternation (not under a repeat)
        if op is c.BRANCH:
            alternatives = [_sequence_hints(list(alt)) for alt in arg[1]]
            if all(alternatives):
                return tuple(h for alt in alternatives for h in alt)
        elif op is c.SUBPATTERN:
            found = _sequence_hints(list(arg[-1]))
            if found:
                return found
    return None


def required_literals(regex: str) -> tuple[str, ...] | None:
    """Literals one of which every match of `regex` contains, or None when unknown.

    Used to skip a pattern whose literals are nowhere in the text (``str.__contains__`` is
    far faster than a regex search without a literal prefix). Uses CPython's regex parser;
    on any surprise it returns None and the regex is simply always run.
    """
    if re.search(r"\(\?[aiLmsux]*i", regex) or re.compile(regex).flags & re.IGNORECASE:
        return None  # case-insensitive somewhere: a literal check would be wrong
    try:
        from re import _parser as parser  # noqa: PLC0415

        return _sequence_hints(list(parser.parse(regex)))
    except Exception:  # noqa: BLE001 - an optimisation only
        return None


@dataclass(frozen=True)
class Pattern:
    """One classifier pattern (shipped or from the config)."""

    id: str
    regex: str
    error_class: str  # an ERROR_CLASSES member or FROM_MATCH
    resource: str | None = None
    priority: int = 50
    ignore_case: bool = False
    tool: str | None = None
    source: str | None = None
    user: bool = False
    compiled: re.Pattern = field(init=False, repr=False, compare=False)

    hints: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)
        object.__setattr__(self, "compiled", re.compile(self.regex, flags))
        object.__setattr__(self, "hints", None if self.ignore_case else required_literals(self.regex))

    def may_match(self, text: str) -> bool:
        """False when none of the literals every match needs is in `text` (a fast pre-check)."""
        return self.hints is None or any(h in text for h in self.hints)


@dataclass(frozen=True)
class ExitCodeRule:
    code: int
    error_class: str
    resource: str | None = None


@dataclass(frozen=True)
class StateRule:
    state: str
    error_class: str
    resource: str | None = None


_PATTERN_KEYS = {"id", "pattern", "regex", "class", "resource", "priority", "ignore_case", "tool", "source"}


def parse_pattern(entry: Any, where: str, *, user: bool) -> Pattern:
    """Validate one pattern mapping; ConfigError names `where` and the pattern id."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: a pattern must be a mapping with id, pattern and class")
    pid = entry.get("id")
    label = f"{where} (id {pid!r})" if pid is not None else where
    if not isinstance(pid, str) or not pid.strip():
        raise ConfigError(f"{label}: 'id' must be a non-empty string")
    unknown = sorted(set(entry) - _PATTERN_KEYS)
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)}")
    if "pattern" in entry and "regex" in entry:
        raise ConfigError(f"{label}: give 'pattern' or 'regex', not both")
    regex = entry.get("pattern", entry.get("regex"))
    if not isinstance(regex, str) or not regex:
        raise ConfigError(f"{label}: 'pattern' must be a non-empty regular expression")
    error_class = entry.get("class")
    allowed = ERROR_CLASSES if user else (*ERROR_CLASSES, FROM_MATCH)
    if error_class not in allowed:
        raise ConfigError(f"{label}: 'class' must be one of {', '.join(allowed)}, got {error_class!r}")
    resource = entry.get("resource")
    if resource is not None:
        if resource not in RESOURCES:
            raise ConfigError(f"{label}: 'resource' must be one of {', '.join(RESOURCES)}, got {resource!r}")
        if error_class != "ResourceError":
            raise ConfigError(f"{label}: 'resource' is only meaningful with class ResourceError")
    priority = entry.get("priority", USER_PRIORITY if user else 50)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{label}: 'priority' must be an integer, got {priority!r}")
    ignore_case = entry.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise ConfigError(f"{label}: 'ignore_case' must be true or false")
    try:
        return Pattern(
            id=pid,
            regex=regex,
            error_class=error_class,
            resource=resource,
            priority=priority,
            ignore_case=ignore_case,
            tool=entry.get("tool"),
            source=entry.get("source"),
            user=user,
        )
    except re.error as exc:
        raise ConfigError(f"{label}: invalid regular expression {regex!r}: {exc}") from exc


def parse_patterns(entries: Any, where: str, *, user: bool) -> list[Pattern]:
    if entries is None:
        return []
    if isinstance(entries, Mapping) or not isinstance(entries, list):
        raise ConfigError(f"{where}: must be a list of patterns")
    patterns = [parse_pattern(e, f"{where}[{i}]", user=user) for i, e in enumerate(entries)]
    seen: set[str] = set()
    for p in patterns:
        if p.id in seen:
            raise ConfigError(f"{where}: duplicate pattern id {p.id!r}")
        seen.add(p.id)
    return patterns


@dataclass(frozen=True)
class PatternPack:
    patterns: tuple[Pattern, ...]
    exit_codes: Mapping[int, ExitCodeRule]
    slurm_states: Mapping[str, StateRule]


def parse_pack(data: Any, where: str = PACK_RESOURCE) -> PatternPack:
    """Validate a pattern pack document (the shipped patterns.yaml or a copy of it)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: not a pattern pack (a mapping with 'patterns')")
    patterns = parse_patterns(data.get("patterns"), f"{where}: patterns", user=False)
    exit_codes: dict[int, ExitCodeRule] = {}
    for i, e in enumerate(data.get("exit_codes") or []):
        code, cls, res = e.get("code"), e.get("class"), e.get("resource")
        if not isinstance(code, int) or cls not in ERROR_CLASSES or res not in (None, *RESOURCES):
            raise ConfigError(f"{where}: exit_codes[{i}] is invalid: {e!r}")
        exit_codes[code] = ExitCodeRule(code, cls, res)
    states: dict[str, StateRule] = {}
    for state, e in (data.get("slurm_states") or {}).items():
        cls, res = e.get("class"), e.get("resource")
        if cls not in ERROR_CLASSES or res not in (None, *RESOURCES):
            raise ConfigError(f"{where}: slurm_states.{state} is invalid: {e!r}")
        states[str(state).upper()] = StateRule(str(state).upper(), cls, res)
    return PatternPack(tuple(patterns), exit_codes, states)


@functools.lru_cache(maxsize=1)
def shipped_pack() -> PatternPack:
    """The pattern pack shipped with the package (parsed and compiled once)."""
    text = importlib_resources.files(__package__).joinpath(PACK_RESOURCE).read_text("utf-8")
    return parse_pack(yaml.safe_load(text))


# ----------------------------------------------------------------------------- scanning


def normalize_slurm_state(state: str | None) -> str | None:
    """'CANCELLED by 0' -> 'CANCELLED', 'out_of_me+' -> 'OUT_OF_MEMORY' (sacct truncation)."""
    if not state or not state.strip():
        return None
    token = state.strip().split()[0].upper().rstrip("+")
    if token.startswith("OUT_OF_ME"):
        return "OUT_OF_MEMORY"
    return token


def decode(data: bytes | str) -> str:
    """Text from bytes, never failing: invalid UTF-8 becomes U+FFFD."""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


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
    """Read the scanned window of a binary stream (seeks on regular files, reads pipes whole)."""
    try:
        size = stream.seek(0, 2)
        stream.seek(0)
    except (OSError, ValueError, AttributeError):
        return scan_window(decode(stream.read()), head, tail)
    if size <= head + tail:
        return decode(stream.read())
    first = stream.read(head)
    stream.seek(size - tail)
    last = stream.read(tail)
    return scan_window(decode(first) + "\n" + decode(last), head, tail)


@dataclass(frozen=True)
class Match:
    pattern: Pattern
    line_start: int  # offset of the line in the scanned text (later = larger)
    line: str
    error_class: str
    resource: str | None


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, (len(text) if end < 0 else end)


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
    found: Match | None = None
    pos = 0
    n = len(text)
    while pos <= n:
        m = rx.search(text, pos)
        if m is None:
            break
        start, end = _line_bounds(text, m.start())
        if m.end() > end:  # the regex ran over a line end: re-check the line alone
            m = rx.search(text[start:end])
        if m is not None:
            resolved = _resolve(pattern, m)
            if resolved is not None:
                found = Match(pattern, start, text[start:end], *resolved)
        pos = end + 1
    return found


def _best(matches: list[Match]) -> Match | None:
    """Highest priority, then the latest line; on a tie the earlier-listed pattern."""
    best: Match | None = None
    for m in matches:  # in pattern order (user patterns first)
        if best is None or (m.pattern.priority, m.line_start) > (best.pattern.priority, best.line_start):
            best = m
    return best


def _evidence(line: str) -> str:
    line = line.strip()
    return line if len(line) <= EVIDENCE_MAX else line[: EVIDENCE_MAX - 3] + "..."


class Classifier:
    """Classify failure text with the shipped pattern pack plus optional user patterns."""

    def __init__(self, extra_patterns: Iterable[Pattern | Mapping] | None = None, pack: PatternPack | None = None):
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

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> Classifier:
        """A classifier with the config's `error_handling.patterns` checked first."""
        section = (cfg or {}).get("error_handling") or {}
        if not isinstance(section, Mapping):
            raise ConfigError("error_handling: must be a mapping")
        patterns = parse_patterns(section.get("patterns"), "error_handling.patterns", user=True)
        return cls(patterns)

    def matches(self, text: str) -> list[Match]:
        """Every pattern's last matching line in the scanned window of `text`."""
        window = scan_window(text)
        found = []
        for pattern in self.patterns:
            m = _last_match(pattern, window)
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
        """Classify failure text (see the module docstring for the precedence)."""
        text = decode(text or "")
        found = self.matches(text)
        best = _best(found)

        state = normalize_slurm_state(slurm_state)
        rule = self.pack.slurm_states.get(state) if state else None
        if rule is not None:
            support = _best([m for m in found if (m.error_class, m.resource) == (rule.error_class, rule.resource)])
            evidence = _evidence(support.line) if support else f"SLURM state: {state}"
            return make_classification(rule.error_class, rule.resource, f"slurm:{state}", evidence)

        if best is not None:
            return make_classification(best.error_class, best.resource, best.pattern.id, _evidence(best.line))

        if exit_code is not None:
            code_rule = self.pack.exit_codes.get(int(exit_code))
            if code_rule is not None:
                return make_classification(
                    code_rule.error_class, code_rule.resource, f"exit:{int(exit_code)}", f"exit code {int(exit_code)}"
                )
        return make_classification(DEFAULT_CLASS)

    def classify_stream(
        self, stream: IO[bytes], exit_code: int | None = None, slurm_state: str | None = None
    ) -> Classification:
        """Classify a binary stream (a file or stdin), reading only the scanned window."""
        return self.classify(read_window(stream), exit_code=exit_code, slurm_state=slurm_state)


@functools.lru_cache(maxsize=1)
def default_classifier() -> Classifier:
    """The classifier with the shipped pack only (compiled once per process)."""
    return Classifier()


def classify(
    text: str | bytes | None, exit_code: int | None = None, slurm_state: str | None = None
) -> Classification:
    """Classify with the shipped pattern pack (see Classifier.classify)."""
    return default_classifier().classify(text, exit_code=exit_code, slurm_state=slurm_state)


def classify_input(
    source: str | os.PathLike | IO[bytes],
    exit_code: int | None = None,
    slurm_state: str | None = None,
    workdir: str | os.PathLike | None = None,
    configfiles: Iterable[str] = (),
) -> Classification:
    """Classify a log file (path) or a binary stream (stdin) as the step runner would.

    The user patterns of the workflow config are used when there is one: the given
    `configfiles`, or `workdir`/config/config.yaml when it exists. A broken config raises
    ConfigError and an unreadable file LogReadError (the CLI reports both, exit 1).
    """
    configfiles = tuple(configfiles)
    cfg = None
    if configfiles or (workdir is not None and (Path(workdir) / DEFAULT_CONFIGFILE).is_file()):
        from .config import load_config

        cfg = load_config(workdir if workdir is not None else ".", configfiles)
    classifier = Classifier.from_config(cfg) if cfg else default_classifier()
    if hasattr(source, "read"):
        return classifier.classify_stream(source, exit_code=exit_code, slurm_state=slurm_state)
    try:
        with open(source, "rb") as stream:
            return classifier.classify_stream(stream, exit_code=exit_code, slurm_state=slurm_state)
    except OSError as exc:
        raise LogReadError(f"cannot read {os.fspath(source)}: {exc.strerror or exc}") from None
