"""Secrets (webhook tokens, SMTP passwords) kept out of every log line, message and row."""

from __future__ import annotations

from urllib.parse import urlsplit

_KNOWN: dict[str, str] = {}  # secret -> what is shown instead
MIN_LENGTH = 4  # shorter values would mask ordinary words


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0ABC/B0DEF/xyz`` -> ``https://hooks.slack.com/
    services/T0…/***``: the host and the start of the path, never the token."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        return "***"
    host = parts.hostname or ""
    segments = [s for s in parts.path.split("/") if s]
    shown = segments[:1] + ([segments[1][:2] + "…"] if len(segments) > 1 else [])
    return f"{parts.scheme}://{host}/" + "/".join(shown + ["***"])


def register(secret: str | None, shown: str = "***") -> None:
    """From now on `redact` replaces `secret` (and, for a URL, its path) by `shown`."""
    if not secret or len(secret) < MIN_LENGTH:
        return
    _KNOWN[secret] = shown
    try:
        parts = urlsplit(secret)
    except ValueError:
        return
    if parts.netloc and len(parts.path) >= MIN_LENGTH:
        _KNOWN.setdefault(parts.path, "/***")
    if parts.password:
        _KNOWN.setdefault(parts.password, "***")


def register_url(url: str | None) -> None:
    if url:
        register(url, mask_url(url))


def redact(text: str) -> str:
    """`text` with every registered secret replaced (longest first)."""
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _KNOWN[secret])
    return text


def redact_event(_logger, _method, event: dict) -> dict:
    """structlog processor: registered secrets never reach a log line."""
    if _KNOWN:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value)
    return event
