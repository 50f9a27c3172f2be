"""Classifier patterns: parsing and checking them, the shipped pack, literal pre-checks."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

import yaml

from ..errors import ConfigError
from .classes import ERROR_CLASSES, RESOURCES

FROM_MATCH = "from_match"  # pattern class taken from the regex's named group `class`
USER_PRIORITY = 1000  # default priority of user patterns (checked before the shipped pack)
PACK_RESOURCE = "patterns.yaml"


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
    try:
        if re.search(r"\(\?[aiLmsux]*i", regex) or re.compile(regex).flags & re.IGNORECASE:
            return None  # case-insensitive somewhere: a literal check would be wrong
        from re import _parser as parser  # noqa: PLC0415

        return _sequence_hints(list(parser.parse(regex)))
    except Exception:  # noqa: BLE001 - an optimisation only (and `regex`-only syntax)
        return None


def compile_pattern(text: str, ignore_case: bool, user: bool):
    """The compiled pattern: the shipped ones with `re`; user patterns with the `regex`
    module, whose searches take a time limit (a user's `(a+)+$` cannot hang anything).
    Raises re.error or regex.error."""
    if not user:
        return re.compile(text, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))
    import regex

    return regex.compile(text, regex.MULTILINE | (regex.IGNORECASE if ignore_case else 0))


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
        compiled = compile_pattern(self.regex, self.ignore_case, self.user)
        object.__setattr__(self, "compiled", compiled)
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
    except Exception as exc:  # re.error, regex.error
        if not isinstance(exc, re.error) and type(exc).__name__ != "error":
            raise
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
