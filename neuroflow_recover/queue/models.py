"""SQLAlchemy 2.0 models of the dead-letter queue.

* `DeadLetterEntry` (table `dead_letter_queue`): one job that failed for good, with the seed's
  fields plus what a Snakemake job needs to be re-run exactly (rule, wildcards, targets,
  invocation). At most ONE unresolved entry per `job_key` (partial unique index): a new
  failure of the same job extends the open entry.
* `AttemptHistory`: one row per attempt of an entry; `event_key` is unique so ingesting the
  same evidence twice adds nothing.
* `IngestedLog`: the Snakemake main logs already ingested (by sha256).
* `Notification` / `Delivery`: the outbox: a message recorded in the transaction of the
  entries it reports, and its delivery to each channel (pending until a channel accepted it).
* `SchemaInfo`: the schema version (checked by `database`, upgraded by `migrations`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..times import iso, utc_now

SCHEMA_VERSION = 3  # 2: ingested_logs.host, 64-bit numbers, outbox; 3: attempts' usage


# a 64-bit integer column: BIGINT on PostgreSQL, INTEGER (already 64-bit) on SQLite, so a
# new SQLite file and an upgraded one declare the same types
INT64 = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "neuroflow_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class DeadLetterEntry(Base):
    """A Snakemake job that failed for good (the seed's dead-letter entry, Snakemake-aware)."""

    __tablename__ = "dead_letter_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # the seed's fields; pipeline_run_id is the Snakemake jobid of the last failure
    pipeline_run_id: Mapped[int | None] = mapped_column(INT64)
    pipeline_name: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(64))  # BIDS label, no "ses-"
    subject_id: Mapped[str | None] = mapped_column(String(64))  # BIDS label, no "sub-"
    error_type: Mapped[str] = mapped_column(String(64))
    error_message: Mapped[str] = mapped_column(Text, default="")
    error_details: Mapped[dict | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolution_notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )
    # Snakemake-specific
    rule: Mapped[str] = mapped_column(String(128))
    wildcards: Mapped[dict] = mapped_column(JSON, default=dict)
    job_key: Mapped[str] = mapped_column(String(512))  # "<rule>/<wildcards key>"
    targets: Mapped[list] = mapped_column(JSON, default=list)
    evidence: Mapped[str | None] = mapped_column(Text)
    pattern_id: Mapped[str | None] = mapped_column(String(128))
    resource: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(INT64)
    slurm_state: Mapped[str | None] = mapped_column(String(32))
    log_paths: Mapped[list] = mapped_column(JSON, default=list)
    slurm_job_ids: Mapped[list] = mapped_column(JSON, default=list)
    invocation: Mapped[dict] = mapped_column(JSON, default=dict)
    retryable: Mapped[bool] = mapped_column(Boolean, default=True)
    run_id: Mapped[str | None] = mapped_column(String(128))  # the run of the last failure
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    history: Mapped[list[AttemptHistory]] = relationship(
        back_populates="entry",
        order_by="AttemptHistory.attempt",
        cascade="all, delete-orphan",
    )

    __table_args__ = (
        # at most one unresolved entry per job
        Index(
            "uq_dead_letter_open_job",
            "job_key",
            unique=True,
            sqlite_where=resolved == false(),
            postgresql_where=resolved == false(),
        ),
        Index("ix_dead_letter_job_key", "job_key"),
        Index("ix_dead_letter_resolved_created", "resolved", "created_at"),
        Index("ix_dead_letter_created", "created_at"),
        Index("ix_dead_letter_pipeline", "pipeline_name", "resolved", "created_at"),
        Index("ix_dead_letter_subject", "subject_id", "resolved"),
        Index("ix_dead_letter_error_type", "error_type", "resolved"),
    )

    @property
    def retry_history(self) -> list[dict]:
        """The seed's `retry_history` list, built from the history table."""
        return [h.to_dict() for h in self.history]


# A job's open entry is looked up with the partial index's own predicate: SQLite uses a
# partial index only for a query that implies its WHERE (`resolved IS 0` walks every open entry).
OPEN = DeadLetterEntry.resolved == false()


class AttemptHistory(Base):
    """One attempt of a dead-lettered job."""

    __tablename__ = "attempt_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("dead_letter_queue.id", ondelete="CASCADE"), index=True
    )
    event_key: Mapped[str] = mapped_column(String(512), unique=True)
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within the entry
    run_id: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(INT64)
    error_type: Mapped[str | None] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(32))
    pattern_id: Mapped[str | None] = mapped_column(String(128))
    evidence: Mapped[str | None] = mapped_column(Text)
    resources: Mapped[dict] = mapped_column(JSON, default=dict)
    slurm_job_id: Mapped[str | None] = mapped_column(String(64))
    slurm_state: Mapped[str | None] = mapped_column(String(32))
    host: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))  # snakemake-log | attempt-record | retry
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    # what the attempt used (its record: step/usage.py); added columns, NULL in older rows
    peak_mem_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    elapsed_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    usage_source: Mapped[str | None] = mapped_column(String(16), nullable=True)

    entry: Mapped[DeadLetterEntry] = relationship(back_populates="history")

    def to_dict(self) -> dict:
        return {
            "attempt": self.attempt,
            "event_key": self.event_key,
            "run_id": self.run_id,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "exit_code": self.exit_code,
            "error_type": self.error_type,
            "resource": self.resource,
            "pattern_id": self.pattern_id,
            "evidence": self.evidence,
            "resources": self.resources or {},
            "slurm_job_id": self.slurm_job_id,
            "slurm_state": self.slurm_state,
            "host": self.host,
            "source": self.source,
            "peak_mem_mb": self.peak_mem_mb,
            "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s,
            "usage_source": self.usage_source,
        }


class IngestedLog(Base):
    """A Snakemake main log whose failures are in the queue."""

    __tablename__ = "ingested_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(INT64)
    run_id: Mapped[str] = mapped_column(String(128))
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str | None] = mapped_column(String(255))  # the machine that ingested it


class Notification(Base):
    """A message about new dead letters or a circuit-breaker trip, waiting in the outbox."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # dead_letter | circuit_breaker
    # set for messages that could be enqueued twice (a breaker announcement): unique
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    title: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    entry_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="notification", cascade="all, delete-orphan"
    )


class Delivery(Base):
    """One notification to one channel: pending until the channel accepted it."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (UniqueConstraint("notification_id", "channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(64))  # webhook | email | apprise
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)  # secrets masked
    claim: Mapped[str | None] = mapped_column(String(64))  # the sender working on it
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the message it went out in (a digest carries several notifications)
    message_id: Mapped[str | None] = mapped_column(String(64))

    notification: Mapped[Notification] = relationship(back_populates="deliveries")
