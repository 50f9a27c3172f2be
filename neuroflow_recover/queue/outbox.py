"""The notification outbox: messages recorded with the entries they report, then delivered.

A batch of new dead letters becomes ONE notification, written in the caller's transaction
(the one that wrote the entries: both or neither); a delivery row per configured channel
stays pending until that channel accepted the message. Senders claim deliveries first, so
several processes never send the same one. The caller owns the transaction.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..times import utc_now
from .models import DeadLetterEntry, Delivery, Notification

CLAIM_STALE = timedelta(minutes=10)  # a claim older than this: its sender died


@dataclass(frozen=True)
class NotifySettings:
    """error_handling.notifications, as far as the outbox needs it."""

    on_dead_letter: bool
    on_circuit_breaker: bool
    channels: tuple[str, ...]  # the configured channels (webhook, email, apprise)
    max_listed: int = 5  # subjects/sessions named per group before "and N more"
    command: str = "neuroflow-recover"  # how the reader calls neuroflow-recover

    @classmethod
    def from_config(cls, cfg: dict | None, command: str = "neuroflow-recover") -> NotifySettings:
        section = notifications_section(cfg)
        return cls(
            on_dead_letter=bool(section.get("on_dead_letter", True)),
            on_circuit_breaker=bool(section.get("on_circuit_breaker", True)),
            channels=configured_channels(cfg),
            max_listed=int(section.get("max_listed", 5)),
            command=command,
        )


def notifications_section(cfg: dict | None) -> dict:
    return ((cfg or {}).get("error_handling") or {}).get("notifications") or {}


def configured_channels(cfg: dict | None) -> tuple[str, ...]:
    """The channels the config sets up: webhook (a URL, or the variable holding one),
    email (recipients), apprise (URLs)."""
    section = notifications_section(cfg)
    channels = []
    if section.get("slack_webhook") or os.environ.get(section.get("slack_webhook_env") or ""):
        channels.append("webhook")
    if section.get("email_recipients"):
        channels.append("email")
    if section.get("apprise_urls"):
        channels.append("apprise")
    return tuple(channels)


def enqueue_dead_letters(
    session: Session, entries: Iterable[DeadLetterEntry], settings: NotifySettings
) -> Notification | None:
    """One notification for these new entries (None when there is nothing to say)."""
    entries = list(entries)
    if not entries or not settings.on_dead_letter or not settings.channels:
        return None
    title, text = compose_dead_letters(entries, settings)
    return _enqueue(session, "dead_letter", title, text, [e.id for e in entries], settings)


def enqueue_breaker(
    session: Session, key: str, description: str, jobs: int, settings: NotifySettings
) -> Notification | None:
    """One notification per circuit-breaker opening (`key` makes it unique)."""
    if not settings.on_circuit_breaker or not settings.channels:
        return None
    if session.scalar(select(Notification.id).where(Notification.dedupe_key == key)):
        return None
    title = f"neuroflow: circuit breaker open: {jobs} jobs failed the same way"
    text = (
        f"{title}\n{description}\nRetries of jobs that failed like this are not started "
        f"until it closes. Look: {settings.command} list"
    )
    try:
        with session.begin_nested():
            return _enqueue(session, "circuit_breaker", title, text, [], settings, key)
    except IntegrityError:  # another process announced it first
        return None


def _enqueue(session, kind, title, text, entry_ids, settings, key=None) -> Notification:
    note = Notification(kind=kind, dedupe_key=key, title=title, text=text, entry_ids=entry_ids)
    note.deliveries = [Delivery(channel=channel) for channel in settings.channels]
    session.add(note)
    session.flush()
    return note


def compose_dead_letters(entries: list[DeadLetterEntry], settings: NotifySettings) -> tuple[str, str]:
    """(title, text): the entries grouped by pipeline and error class, with counts, the
    first subjects/sessions, each group's evidence line and the commands to look or retry."""
    groups: dict[tuple[str, str], list[DeadLetterEntry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.pipeline_name, entry.error_type)].append(entry)
    title = f"neuroflow: {len(entries)} job(s) dead-lettered"
    lines = [title]
    for (pipeline, error_type), members in sorted(groups.items()):
        lines += _group_lines(pipeline, error_type, members, settings)
    lines.append(f"All open entries: {settings.command} list")
    return title, "\n".join(lines)


def _group_lines(pipeline, error_type, members, settings) -> list[str]:
    named = [_job_name(e) for e in members[: settings.max_listed]]
    more = len(members) - len(named)
    who = ", ".join(named) + (f" and {more} more" if more > 0 else "")
    first = members[0]
    look = f"{settings.command} show {first.id}"
    if len(members) > 1:
        look = f"{settings.command} list --pipeline {pipeline}"
    retry = (
        f"{settings.command} retry-all --pipeline {pipeline}"
        if len(members) > 1
        else f"{settings.command} retry {first.id}"
    )
    if not first.retryable:
        retry = f"fix the cause, then {retry}"
    return [
        f"- {pipeline} / {error_type}: {len(members)} job(s): {who}",
        f"  evidence: {first.evidence or '(none)'}",
        f"  look: {look}   retry: {retry}",
    ]


def _job_name(entry: DeadLetterEntry) -> str:
    name = f"sub-{entry.subject_id}" if entry.subject_id else entry.rule
    return f"{name} ses-{entry.session_id}" if entry.session_id else name


# --- senders' side ---------------------------------------------------------------------


def claim(session: Session, channel: str) -> tuple[str, list[Delivery]]:
    """Claim the pending deliveries of `channel` (none already claimed by a live sender)."""
    token = uuid.uuid4().hex
    now = utc_now()
    session.execute(
        update(Delivery)
        .where(
            Delivery.channel == channel,
            Delivery.status == "pending",
            or_(Delivery.claimed_at.is_(None), Delivery.claimed_at < now - CLAIM_STALE),
        )
        .values(claim=token, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    claimed = list(
        session.scalars(select(Delivery).where(Delivery.claim == token).order_by(Delivery.id))
    )
    return token, claimed


def delivered_within(session: Session, channel: str, window: timedelta) -> int:
    """Messages (not notifications: a digest is one) sent to `channel` within `window`."""
    since = utc_now() - window
    return session.scalar(
        select(func.count(func.distinct(Delivery.message_id))).where(
            Delivery.channel == channel,
            Delivery.status == "delivered",
            Delivery.delivered_at >= since,
        )
    ) or 0


def release(session: Session, token: str, error: str | None = None) -> None:
    """Give claimed deliveries back (still pending), counting a failed attempt."""
    values = {"claim": None, "claimed_at": None}
    if error is not None:
        values |= {"attempts": Delivery.attempts + 1, "last_error": error}
    session.execute(
        update(Delivery)
        .where(Delivery.claim == token)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def mark_delivered(session: Session, token: str) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.claim == token)
        .values(
            status="delivered",
            delivered_at=utc_now(),
            message_id=token,
            attempts=Delivery.attempts + 1,
            claim=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
