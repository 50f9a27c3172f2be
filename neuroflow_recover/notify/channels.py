"""The channels a message goes out on: a Slack-style webhook, e-mail (SMTP), Apprise URLs.

Each `send` returns nothing when the channel accepted the message and raises
`ChannelError` (its text free of secrets) otherwise; every call has a bounded timeout.
"""

from __future__ import annotations

import json
import os
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage

from .. import secrets
from ..errors import NeuroflowError
from ..queue.outbox import configured_channels, notifications_section


class ChannelError(NeuroflowError):
    """A channel did not accept a message (down, refused, slow); the text has no secrets."""


@dataclass
class Webhook:
    """Slack incoming webhook; Mattermost and Rocket.Chat accept the same JSON."""

    url: str
    timeout: float = 10.0
    name: str = "webhook"

    def send(self, title: str, text: str) -> None:
        body = json.dumps({"text": text}).encode("utf-8")
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise ChannelError(_clean(f"webhook refused the message: HTTP {exc.code}")) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ChannelError(_clean(f"webhook unreachable: {_reason(exc)}")) from None
        if not 200 <= status < 300:
            raise ChannelError(f"webhook answered HTTP {status}")


@dataclass
class Email:
    recipients: list[str]
    host: str = "localhost"
    port: int = 25
    sender: str = "neuroflow@localhost"
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 10.0
    name: str = "email"

    def send(self, title: str, text: str) -> None:
        message = EmailMessage()
        message["Subject"] = title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(_clean(f"SMTP {self.host}:{self.port}: {_reason(exc)}")) from None
        if refused:
            raise ChannelError(f"SMTP refused {len(refused)} recipient(s): {', '.join(refused)}")


@dataclass
class Apprise:
    """Any service Apprise knows (Teams, Matrix, ntfy, Discord, ...), by URL."""

    urls: list[str] = field(repr=False)
    timeout: float = 10.0
    name: str = "apprise"

    def send(self, title: str, text: str) -> None:
        import apprise

        notifier = apprise.Apprise()
        for url in self.urls:
            if not notifier.add(url):
                raise ChannelError(_clean(f"apprise does not understand {url}"))
        if not notifier.notify(title=title, body=text):
            raise ChannelError("apprise: at least one service did not accept the message")


def from_config(cfg: dict | None) -> dict[str, Webhook | Email | Apprise]:
    """The configured channels by name; their secrets registered for redaction."""
    section = notifications_section(cfg)
    names = configured_channels(cfg)
    timeout = float(section.get("timeout_seconds", 10))
    channels: dict[str, Webhook | Email | Apprise] = {}
    if "webhook" in names:
        url = section.get("slack_webhook") or os.environ[section["slack_webhook_env"]]
        secrets.register_url(url)
        channels["webhook"] = Webhook(url, timeout)
    if "email" in names:
        smtp = section.get("smtp") or {}
        password = os.environ.get(smtp.get("password_env") or "", "")
        secrets.register(password)
        channels["email"] = Email(
            recipients=list(section["email_recipients"]),
            host=smtp.get("host", "localhost"),
            port=int(smtp.get("port", 25)),
            sender=smtp.get("sender", "neuroflow@localhost"),
            starttls=bool(smtp.get("starttls", False)),
            username=smtp.get("username", ""),
            password=password,
            timeout=timeout,
        )
    if "apprise" in names:
        for item in section["apprise_urls"]:
            secrets.register_url(item)
        channels["apprise"] = Apprise(list(section["apprise_urls"]), timeout)
    return channels


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason


def _clean(text: str) -> str:
    return secrets.redact(text)
