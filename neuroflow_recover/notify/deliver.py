"""Delivering the outbox: each channel gets its pending notifications as one message.

Several pending notifications for a channel go out as one digest; beyond
`max_per_hour` messages a channel gets nothing until the hour has passed (what waits is
folded into the next digest). A channel that refuses or times out leaves its deliveries
pending for the next `neuroflow-recover` command or `neuroflow-recover notify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from ..logsetup import get_logger
from ..queue.outbox import (
    claim,
    delivered_within,
    mark_delivered,
    notifications_section,
    release,
)
from .channels import ChannelError
from .channels import from_config as channels_from_config

log = get_logger(__name__)

DIGEST_MAX_CHARS = 30_000  # chat services cut long messages (Slack: 40,000 characters)
HOUR = timedelta(hours=1)


@dataclass
class Sent:
    """What one channel did with its pending notifications."""

    channel: str
    status: str  # delivered | failed | deferred (flood control) | nothing
    notifications: int = 0
    error: str | None = None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def deliver_pending(session: Session, cfg: dict | None) -> list[Sent]:
    """Send what the outbox holds, channel by channel (short transactions on `session`,
    which must not be inside one; nothing held open while a channel is contacted)."""
    max_per_hour = int(notifications_section(cfg).get("max_per_hour", 6))
    return [
        _deliver(session, name, channel, max_per_hour)
        for name, channel in channels_from_config(cfg).items()
    ]


def _deliver(session: Session, name: str, channel, max_per_hour: int) -> Sent:
    with session.begin():
        token, claimed = claim(session, name)
        if not claimed:
            return Sent(name, "nothing")
        if delivered_within(session, name, HOUR) >= max_per_hour:
            release(session, token)
            log.warning("notifications held back: too many messages this hour", channel=name,
                        pending=len(claimed))  # fmt: skip
            return Sent(name, "deferred", len(claimed))
        title, text = message([(d.notification.title, d.notification.text) for d in claimed])
    try:
        channel.send(title, text)
    except ChannelError as exc:
        with session.begin():
            release(session, token, str(exc))
        log.warning("notification not delivered; it stays pending", channel=name, error=str(exc))
        return Sent(name, "failed", len(claimed), str(exc))
    with session.begin():
        mark_delivered(session, token)
    log.info("notification delivered", channel=name, notifications=len(claimed))
    return Sent(name, "delivered", len(claimed))


def message(notes: list[tuple[str, str]]) -> tuple[str, str]:
    """One notification as it is; several as one digest (capped)."""
    if len(notes) == 1:
        return notes[0]
    title = f"neuroflow: {len(notes)} notifications"
    parts, size, shown = [title], len(title), 0
    for _, text in notes:
        if size + len(text) > DIGEST_MAX_CHARS:
            break
        parts.append(text)
        size += len(text) + 2
        shown += 1
    if shown < len(notes):
        parts.append(f"... and {len(notes) - shown} more (neuroflow-recover list)")
    return title, "\n\n".join(parts)


def test_message(cfg: dict | None) -> list[Sent]:
    """`notify --test`: a test message to every configured channel, each one's verdict."""
    results = []
    for name, channel in channels_from_config(cfg).items():
        try:
            channel.send(
                "neuroflow: test notification",
                "neuroflow: test notification: this channel receives dead-letter reports.",
            )
        except ChannelError as exc:
            results.append(Sent(name, "failed", 0, str(exc)))
        else:
            results.append(Sent(name, "delivered", 0))
    return results
