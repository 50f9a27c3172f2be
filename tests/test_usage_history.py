"""The queue keeps what attempts used; old files gain the columns; purge frees work directories.

Real SQLite files: a database made before the usage columns existed (the columns dropped
with SQLite's own ALTER TABLE) is opened by this version, which adds them and keeps every
row; `show` prints what an attempt used; `purge` removes the work directories of dead
letters older than the retention, and only those.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect

from helpers import REPO
from neuroflow_recover.cli.render import render_entry
from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import AttemptEvent, JobFailure, dead_letter, get_entry
from neuroflow_recover.queue.retention import layout_of, purge
from neuroflow_recover.workflow.config import load_config

USAGE = ("peak_mem_mb", "elapsed_s", "cpu_s", "usage_source")


def failure(rule="qsiparc_parcellate", subject="01", session="01", keys=("run1:3:1",),
            pipeline="qsiparc", when=None) -> JobFailure:  # fmt: skip
    """A memory failure of one job with one history event per key."""
    wildcards = {"subject": subject, **({"session": session} if session else {})}
    events = [
        AttemptEvent(event_key=key, source="snakemake-log", run_id=key.split(":")[0],
                     exit_code=137, error_type="ResourceError", resource="memory")
        for key in keys
    ]  # fmt: skip
    return JobFailure(
        rule=rule, wildcards=wildcards, pipeline_name=pipeline, error_type="ResourceError",
        retryable=True, error_message="exit status 137", events=events, resource="memory",
        failed_at=when or datetime.now(UTC),
    )  # fmt: skip


def test_a_version_2_database_gets_the_usage_columns_and_keeps_its_rows(tmp_path):
    db = open_database(None, tmp_path)
    with db.sessions.begin() as session:
        dead_letter(session, failure(keys=("run1:3:1", "run1:3:2")))
    db.dispose()
    path = tmp_path / ".neuroflow" / "neuroflow.db"
    with sqlite3.connect(path) as conn:  # as schema version 2 made it
        for column in USAGE:
            conn.execute(f"ALTER TABLE attempt_history DROP COLUMN {column}")
        conn.execute("UPDATE neuroflow_schema SET version = 2")
    reopened = open_database(None, tmp_path, create=False, readonly=True)  # a reader first
    columns = {c["name"] for c in inspect(reopened.engine).get_columns("attempt_history")}
    assert set(USAGE) <= columns
    with reopened.sessions() as session:
        entry = get_entry(session, 1)
        assert [h.attempt for h in entry.history] == [1, 2]
        assert entry.history[0].peak_mem_mb is None and entry.history[0].exit_code == 137
    reopened.dispose()


def test_the_history_keeps_what_an_attempt_used_and_show_prints_it(tmp_path):
    db = open_database(None, tmp_path)
    item = failure()
    item.events = [replace(item.events[0], peak_mem_mb=15872, elapsed_s=5400.0, cpu_s=30100.0,
                           usage_source="sstat")]  # fmt: skip
    with db.sessions.begin() as session:
        dead_letter(session, item)
    with db.sessions() as session:
        entry = get_entry(session, 1)
        row = entry.history[0].to_dict()
        assert (row["peak_mem_mb"], row["usage_source"]) == (15872, "sstat")
        assert "        used:      peak 15872 MB, 5400.0 s, CPU 30100.0 s (sstat)" in render_entry(entry)
    db.dispose()


def test_purge_removes_the_work_directories_of_old_dead_letters_only(tmp_path):
    cfg = load_config(REPO, ())
    layout = layout_of(cfg)
    old = datetime.now(UTC) - timedelta(days=100)
    db = open_database(None, tmp_path)
    with db.sessions.begin() as session:
        dead_letter(session, failure("qsiprep_preprocess", "01", None, pipeline="qsiprep", when=old))
        dead_letter(session, failure("qsiprep_preprocess", "02", None, keys=("run2:4:1",),
                                     pipeline="qsiprep"))  # fmt: skip
        dead_letter(session, failure("qsirecon_reconstruct", "03", "01", keys=("run3:5:1",),
                                     pipeline="qsirecon", when=old))  # fmt: skip
    works = [tmp_path / layout.work("qsiprep", "01"), tmp_path / layout.work("qsiprep", "02"),
             tmp_path / layout.work("qsirecon", "03", "01")]  # fmt: skip
    for work in works:
        (work / "node").mkdir(parents=True)
    with db.sessions() as session:
        dry = purge(session, tmp_path, 90, dry_run=True, layout=layout)
        assert dry.work_dirs == ["work/qsiprep/sub-01", "work/qsirecon/sub-03_ses-01"]
        assert all(work.exists() for work in works)
        done = purge(session, tmp_path, 90, layout=layout)
    assert done.work_dirs == dry.work_dirs and done.entry_ids == []  # open entries stay
    assert [work.exists() for work in works] == [False, True, False]
    db.dispose()
