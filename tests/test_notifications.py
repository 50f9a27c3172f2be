"""Notifications and retention against real servers on loopback.

An SMTP server (aiosmtpd, with authentication) and an HTTP server standing in for a Slack
webhook run on 127.0.0.1; real `neuroflow-recover` processes run a real toy workflow (three
different failures), deliver, retry delivery after the webhook was down, and never show a
secret. Retention (`purge`) runs on a database with entries of various ages.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select, text

from dlq_workflows import behave, make_toy_workflow
from helpers import TOKEN, Webhook, tool_env
from neuroflow_recover.notify.deliver import deliver_pending
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import AttemptEvent, JobFailure, dead_letter
from neuroflow_recover.queue.models import DeadLetterEntry
from neuroflow_recover.queue.outbox import NotifySettings, enqueue_dead_letters
from neuroflow_recover.step.breaker import BreakerSettings, CircuitBreaker, signature_of

pytestmark = pytest.mark.workflow

PASSWORD = "s3cret-smtp-passw0rd"
NO_DICOM = "Error: Unable to find any DICOM images in dicom/01 (or subfolders 5 deep)"
LICENSE = "ERROR: FreeSurfer license file /opt/freesurfer/license.txt not found."
OOM = "MemoryError: Unable to allocate 1.61 GiB for an array"


class Mailbox:
    """aiosmtpd's handler: every accepted message."""

    def __init__(self):
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope.content.decode("utf-8", errors="replace"))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok)


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=_free_port(), authenticator=_authenticate,
        auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notify_config(root: Path, webhook_url: str, smtp_port: int | None, **extra) -> None:
    """notify.yaml: the webhook (its URL from the environment), e-mail when `smtp_port`."""
    notifications = {"slack_webhook_env": "NEUROFLOW_TEST_WEBHOOK", **extra}
    if smtp_port is not None:
        notifications |= {
            "email_recipients": ["data-manager@example.org"],
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "username": "neuroflow",
                     "password_env": "NEUROFLOW_TEST_SMTP_PASSWORD"},
        }  # fmt: skip
    (root / "notify.yaml").write_text(json.dumps({"error_handling": {"notifications": notifications}}))
    (root / "webhook.url").write_text(webhook_url)


def recover(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = tool_env(
        NEUROFLOW_TEST_WEBHOOK=(root / "webhook.url").read_text(),
        NEUROFLOW_TEST_SMTP_PASSWORD=PASSWORD,
        NEUROFLOW_DELAY_SCALE="0.01",
    )
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-vv", "-d", str(root),
         "--configfile", "notify.yaml", *args],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip


def three_failures(root: Path) -> Path:
    make_toy_workflow(root, [("01", "1"), ("02", "1"), ("03", "1")], retries=2)
    behave(root, "01", "1", f"until|never|1|{NO_DICOM}")
    behave(root, "02", "1", f"until|never|1|{LICENSE}")
    behave(root, "03", "1", f"until|never|137|{OOM}")
    return root


def test_one_email_and_one_post_name_the_three_failures(tmp_path, smtp, webhook):
    controller, mailbox = smtp
    root = three_failures(tmp_path / "wf")
    notify_config(root, webhook.url, controller.port)
    run = recover(root, "run", "--", "--cores", "2", "--keep-going")
    assert run.returncode == 1, run.stderr[-3000:]
    assert len(webhook.bodies) == 1 and len(mailbox.messages) == 1
    for message in (webhook.bodies[0]["text"], mailbox.messages[0]):
        assert "3 job(s) dead-lettered" in message
        for error_class, evidence in (
            ("ValidationError", "Unable to find any DICOM images"),
            ("ConfigurationError", "FreeSurfer license file"),
            ("ResourceError", "MemoryError"),
        ):
            assert f"toy_step / {error_class}: 1 job(s)" in message
            assert evidence in message
        assert "neuroflow-recover -d" in message and "retry" in message
    again = recover(root, "notify")  # nothing is sent twice
    assert again.returncode == 0 and len(webhook.bodies) == 1 and len(mailbox.messages) == 1
    assert "webhook: nothing pending" in again.stdout
    _assert_no_secret(root, run, again)


def test_a_webhook_down_during_the_run_delivers_later_exactly_once(tmp_path, smtp):
    controller, mailbox = smtp
    port = _free_port()  # nothing listens there during the run
    root = three_failures(tmp_path / "wf")
    notify_config(root, f"http://127.0.0.1:{port}/services/{TOKEN}", controller.port)
    run = recover(root, "run", "--", "--cores", "2", "--keep-going")
    assert run.returncode == 1, run.stderr[-3000:]  # as without notifications
    listed = json.loads(recover(root, "list", "--json").stdout)
    assert sorted(e["error_type"] for e in listed) == [
        "ConfigurationError", "ResourceError", "ValidationError"]  # fmt: skip
    assert len(mailbox.messages) == 1  # e-mail was up
    server = Webhook(port)  # the webhook is back
    try:
        first = recover(root, "notify")
        assert first.returncode == 0, first.stderr
        assert len(server.bodies) == 1 and "3 job(s) dead-lettered" in server.bodies[0]["text"]
        second = recover(root, "notify")
        assert second.returncode == 0 and len(server.bodies) == 1
    finally:
        server.stop()
    assert len(mailbox.messages) == 1
    _assert_no_secret(root, run, first, second)


def test_concurrent_senders_send_once(tmp_path, webhook):
    root = tmp_path / "wf"
    root.mkdir()
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text("{}\n")
    notify_config(root, webhook.url, None)
    _queue(root, 3, NotifySettings(True, True, ("webhook",)))
    env = tool_env(NEUROFLOW_TEST_WEBHOOK=webhook.url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "--configfile",
             "notify.yaml", "notify"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    for proc in procs:
        proc.communicate(timeout=300)
    assert len(webhook.bodies) == 1


def test_500_entries_at_once_are_one_message(tmp_path, webhook):
    cfg = {"error_handling": {"notifications": {"slack_webhook": webhook.url}}}
    db = _queue(tmp_path, 500, NotifySettings.from_config(cfg))
    with db.sessions() as session:
        (sent,) = deliver_pending(session, cfg)
    assert (sent.status, sent.notifications) == ("delivered", 1)
    (body,) = webhook.bodies
    assert "500 job(s) dead-lettered" in body["text"]
    assert "toy_step / ValidationError: 500 job(s): sub-000 ses-1, sub-001 ses-1" in body["text"]
    assert "and 495 more" in body["text"]


def test_flood_control_folds_what_waits_into_one_digest(tmp_path, webhook):
    cfg = {"error_handling": {"notifications": {"slack_webhook": webhook.url, "max_per_hour": 1}}}
    settings = NotifySettings.from_config(cfg)
    db = _queue(tmp_path, 1, settings, first=0)
    with db.sessions() as session:
        assert deliver_pending(session, cfg)[0].status == "delivered"
    _queue(tmp_path, 1, settings, first=1)
    _queue(tmp_path, 1, settings, first=2)
    with db.sessions() as session:
        assert deliver_pending(session, cfg)[0].status == "deferred"
    assert len(webhook.bodies) == 1
    with db.sessions() as session, session.begin():  # an hour later
        session.execute(text("UPDATE notification_deliveries SET delivered_at = :t"),
                        {"t": datetime.now(UTC) - timedelta(hours=2)})  # fmt: skip
    with db.sessions() as session:
        (sent,) = deliver_pending(session, cfg)
    assert (sent.status, sent.notifications) == ("delivered", 2)
    assert webhook.bodies[1]["text"].startswith("neuroflow: 2 notifications")


def test_a_circuit_breaker_trip_is_announced(tmp_path, webhook):
    root = tmp_path / "wf"
    (root / "config").mkdir(parents=True)
    (root / "config" / "config.yaml").write_text("{}\n")
    notify_config(root, webhook.url, None)
    breaker = CircuitBreaker(root, BreakerSettings(threshold=3))
    sig = signature_of("TransientError", "license_server", "license server 10.0.0.7 down")
    for subject in ("01", "02", "03"):
        breaker.record_failure(sig, "qsirecon_reconstruct", {"subject": subject})
    _queue(root, 0, NotifySettings(True, True, ("webhook",)))  # creates the database
    env = tool_env(NEUROFLOW_TEST_WEBHOOK=webhook.url)
    for _ in range(2):  # announced once
        subprocess.run(
            [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), "--configfile",
             "notify.yaml", "notify"], env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    (body,) = webhook.bodies
    assert "circuit breaker open: 3 jobs failed the same way" in body["text"]
    assert "license server" in body["text"]


def test_notify_test_says_per_channel_whether_it_was_accepted(tmp_path, smtp, webhook):
    controller, mailbox = smtp
    root = tmp_path / "wf"
    (root / "config").mkdir(parents=True)
    (root / "config" / "config.yaml").write_text("{}\n")
    notify_config(root, webhook.url, controller.port)
    result = recover(root, "notify", "--test")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "webhook: test message accepted\nemail: test message accepted\n"
    assert len(webhook.bodies) == 1 and len(mailbox.messages) == 1
    (root / "webhook.url").write_text(f"http://127.0.0.1:{_free_port()}/services/{TOKEN}")
    down = recover(root, "notify", "--test")
    assert down.returncode == 1
    assert "webhook: test message FAILED: webhook unreachable" in down.stdout
    _assert_no_secret(root, result, down)


def test_purge_removes_only_old_resolved_entries(tmp_path):
    db = _queue(tmp_path, 6, NotifySettings(True, True, ()))
    now = datetime.now(UTC)
    ages = {1: 200, 2: 100, 3: 91, 4: 89, 5: 10}  # resolved that many days ago; 6 stays open
    with db.sessions() as session, session.begin():
        for entry in session.scalars(select(DeadLetterEntry)):
            if entry.id in ages:
                entry.resolved, entry.resolved_by = True, "test"
                entry.resolved_at = now - timedelta(days=ages[entry.id])
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("{}\n")
    args = [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(tmp_path), "purge"]
    dry = subprocess.run([*args, "--dry-run", "--json"], capture_output=True, text=True,
                         env=tool_env(), timeout=300)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["entry_ids"] == [1, 2, 3]
    assert _ids(db) == [1, 2, 3, 4, 5, 6]
    done = subprocess.run(args, capture_output=True, text=True, env=tool_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed: 3 resolved entr(y/ies) older than 90 days (1, 2, 3)")
    assert _ids(db) == [4, 5, 6]
    stats = subprocess.run([*args[:-1], "stats", "--format", "json"], capture_output=True,
                           text=True, env=tool_env(), timeout=300)  # fmt: skip
    assert json.loads(stats.stdout)["total"] == 3
    older = subprocess.run([*args, "--older-than", "5"], capture_output=True, text=True,
                           env=tool_env(), timeout=300)  # fmt: skip
    assert older.returncode == 0 and _ids(db) == [6]  # never the unresolved one


def _queue(root: Path, n: int, settings: NotifySettings, first: int = 0):
    """`n` new entries dead-lettered and notified in ONE transaction (as one ingest does)."""
    db = open_database(None, root)
    with db.sessions() as session, session.begin():
        entries = []
        for i in range(first, first + n):
            failure = JobFailure(
                rule="toy_step", wildcards={"subject": f"{i:03d}", "session": "1"},
                pipeline_name="toy_step", error_type="ValidationError", retryable=False,
                error_message="generated", evidence=f"{NO_DICOM} ({i})",
                events=[AttemptEvent(event_key=f"gen:{i}", source="snakemake-log")],
            )  # fmt: skip
            entries.append(dead_letter(session, failure))
        enqueue_dead_letters(session, entries, settings)
    return db


def _ids(db) -> list[int]:
    with db.sessions() as session:
        return list(session.scalars(select(DeadLetterEntry.id).order_by(DeadLetterEntry.id)))


def _assert_no_secret(root: Path, *runs: subprocess.CompletedProcess) -> None:
    """The password and the webhook token: in no output, log file, database row or CSV."""
    secrets = [PASSWORD, TOKEN, *TOKEN.split("/")]
    texts = [r.stdout + r.stderr for r in runs]
    stats = recover(root, "stats", "--format", "csv")
    texts += [stats.stdout + stats.stderr]
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".txt", ".tsv", ".csv"):
            texts.append(path.read_text(errors="replace"))
    database = root / ".neuroflow" / "neuroflow.db"
    if database.exists():
        with sqlite3.connect(database) as conn:
            texts.append("\n".join(conn.iterdump()))
    for secret in secrets:
        assert not any(secret in text for text in texts), f"a secret leaked: {secret[:4]}…"
