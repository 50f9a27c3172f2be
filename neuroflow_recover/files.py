"""Reading the end of a file or a text without holding a big log in memory."""

from __future__ import annotations

import os
from pathlib import Path


def decode(data: bytes | str) -> str:
    """Text from bytes, never failing: invalid UTF-8 becomes U+FFFD."""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


def tail_text(text: str, max_chars: int) -> str:
    """The last `max_chars` of `text`, from a line start when it had to be cut."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if newline >= 0 else cut


def read_tail(path: str | os.PathLike, max_bytes: int) -> tuple[str, int]:
    """(text, size): the last `max_bytes` of a file, decoded, from a line start when cut.

    NUL bytes are dropped. Raises OSError (FileNotFoundError, IsADirectoryError, ...).
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        fh.seek(start)
        data = fh.read(max_bytes)
    text = decode(data.replace(b"\x00", b""))
    if start > 0:
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else text
    return text, size


def read_tail_noted(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(text, note) for evidence: the file's tail, or None and why not (never raises)."""
    try:
        text, size = read_tail(path, max_bytes)
    except FileNotFoundError:
        return None, "absent"
    except IsADirectoryError:
        return None, "a directory"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or type(exc).__name__}"
    return text, (f"last {max_bytes} of {size} bytes" if size > max_bytes else "")


def read_head_and_tail(
    path: str | os.PathLike, head: int, tail: int, offset: int = 0
) -> str:
    """The text of a file from `offset`: all of it, or its first `head` and last `tail`
    bytes (joined by a newline) when it is longer. Raises OSError."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(offset)
        if size - offset <= head + tail:
            data = fh.read()
        else:
            data = fh.read(head) + b"\n"
            fh.seek(size - tail)
            data += fh.read()
    return decode(data)
