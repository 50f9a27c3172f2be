"""The lines of a log file as the parser sees them: decoded, without colour codes or a paste's
uniform indentation, numbered, with what was odd about them noted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import LogFormatError
from .lines import ANCHOR

MAX_LINE_BYTES = 1 << 20  # longer lines are split (a binary blob without newlines)
SNIFF_LINES = 200  # the indentation of a paste is decided within its first lines
# terminal escapes (colours, cursor moves) and colour codes whose ESC a copy-paste lost
# (Snakemake colours a whole message: the codes sit at the start and end of lines)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]")
_BARE_CODES = re.compile(r"^(?:\[\d{1,3}(?:;\d{1,3})*m)+|(?:\[\d{1,3}(?:;\d{1,3})*m)+$")
# what may stand before every line of a pasted log: spaces, tabs, quote marks
_PASTE_PREFIX = re.compile(r"[ \t>]*")


def strip_escapes(line: str) -> str:
    if "\x1b" in line:
        line = _ESCAPES.sub("", line)
    if "m" in line and "[" in line:
        line = _BARE_CODES.sub("", line)
    return line


class LogLines:
    """The lines of one log: `read(handle)` yields (line number, text)."""

    def __init__(self, path: Path, warnings: list[str]):
        self.path = path
        self.warnings = warnings
        self.lineno = 0  # lines read so far
        self.not_utf8 = 0
        self.escapes = 0  # lines that carried terminal colour codes
        self.complete = True  # False: the last line was cut (a kill mid-write)
        self.prefix: str | None = None  # what stands before every line (a paste), once known

    def read(self, handle) -> Iterator[tuple[int, str]]:
        """Every line, numbered from 1; a uniform prefix (indentation of a paste, a quote's
        `> `) is decided on the first Snakemake line and removed from every line."""
        waiting: list[tuple[int, str]] = []
        for number, line in self._decoded(handle):
            if self.prefix is None:
                waiting.append((number, line))
                prefix = paste_prefix(line)
                if prefix is None and len(waiting) < SNIFF_LINES:
                    continue
                self._set_prefix(prefix or "")
                for item in waiting:
                    yield item[0], self._unprefixed(item[1])
                waiting = []
                continue
            yield number, self._unprefixed(line)
        for number, line in waiting:  # a short log without any Snakemake line
            yield number, line
        if self.escapes:
            self.warnings.append(f"terminal colour codes removed from {self.escapes} line(s)")

    def _set_prefix(self, prefix: str) -> None:
        self.prefix = prefix
        if prefix:
            self.warnings.append(
                f"every line starts with {prefix!r} (a pasted log?); removed before parsing"
            )

    def _unprefixed(self, line: str) -> str:
        prefix = self.prefix
        if not prefix:
            return line
        if line.startswith(prefix):
            return line[len(prefix) :]
        # a shorter prefix (a blank line of the paste, a quote mark without its space)
        cut = _PASTE_PREFIX.match(line, 0, len(prefix)).end()
        return line[cut:]

    def _decoded(self, handle) -> Iterator[tuple[int, str]]:
        while raw := handle.readline(MAX_LINE_BYTES):
            self.lineno += 1
            if b"\x00" in raw:
                raise LogFormatError(
                    f"{self.path}: binary file (NUL byte on line {self.lineno}), "
                    "not a Snakemake log"
                )
            if not raw.endswith(b"\n"):
                if len(raw) < MAX_LINE_BYTES:  # never trust half a line
                    self.complete = False
                    self.warnings.append(
                        f"the last line ({self.lineno}) is incomplete and was ignored"
                    )
                    return
                self.warnings.append(
                    f"line {self.lineno} is longer than {MAX_LINE_BYTES} bytes and was split"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8 += 1
                line = raw.decode("utf-8", errors="replace")
            line = line.rstrip()  # CRLF, trailing blanks of a paste
            clean = strip_escapes(line)
            if clean != line:
                self.escapes += 1
            yield self.lineno, clean


def paste_prefix(line: str) -> str | None:
    """What stands before a Snakemake line (spaces, tabs, `> `), or None if this is not one."""
    prefix = _PASTE_PREFIX.match(line).group()
    rest = line[len(prefix) :]
    if not rest or not ANCHOR.match(rest):
        return None
    return prefix


def unknown_format(path: Path, not_utf8: int) -> str:
    if not_utf8:
        return f"{path}: not UTF-8 text and not a Snakemake main log"
    return f"{path}: does not look like a Snakemake main log (no Snakemake line in it)"
