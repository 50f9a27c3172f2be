"""How fast are `list` and `stats` on a large dead-letter queue?

Fills a temporary SQLite database (the real schema, WAL, the real indexes) with N entries
(default 100,000; one attempt-history row each), then times the library calls behind
`neuroflow-recover list` (default, --pipeline, --all) and `stats`, and the `list` and
`stats` commands themselves end to end (a fresh process each). Prints the figures.

    .venv/bin/python benchmarks/dlq_scale.py [--entries N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from neuroflow_recover.queue.database import open_database
from neuroflow_recover.queue.entries import list_entries
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry
from neuroflow_recover.queue.stats import queue_stats

PIPELINES = {
    "bids_conversion": "heudiconv_convert",
    "qsiprep": "qsiprep_preprocess",
    "qsirecon": "qsirecon_reconstruct",
    "qsiparc": "qsiparc_parcellate",
}
CLASSES = ["ResourceError", "TransientError", "ValidationError", "ConfigurationError"]


def fill(db, n: int, seed: int = 7) -> float:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    batch = 10_000
    with db.engine.begin() as conn:
        for offset in range(0, n, batch):
            rows, history = [], []
            for i in range(offset, min(n, offset + batch)):
                pipeline = rng.choice(list(PIPELINES))
                subject, session = f"{i % 5000:05d}", f"{i % 3 + 1}"
                wildcards = {"subject": subject, "session": session}
                when = start + timedelta(seconds=i * 30)
                error = rng.choice(CLASSES)
                rows.append(
                    {
                        "id": i + 1,
                        "pipeline_run_id": i % 500,
                        "pipeline_name": pipeline,
                        "subject_id": subject,
                        "session_id": session,
                        "error_type": error,
                        "error_message": "CalledProcessError: returned non-zero exit status 1.",
                        "error_details": {"output": [f"results/{subject}/{session}.txt"]},
                        "attempts": 1,
                        # every job key appears once per "round"; older rounds are resolved
                        "resolved": i < n - 20_000,
                        "created_at": when,
                        "updated_at": when,
                        "failed_at": when,
                        "rule": PIPELINES[pipeline],
                        "wildcards": wildcards,
                        "job_key": f"{PIPELINES[pipeline]}/{i}",
                        "targets": [f"results/{subject}/{session}.txt"],
                        "evidence": "Killed",
                        "resource": "memory" if error == "ResourceError" else None,
                        "log_paths": [],
                        "slurm_job_ids": [],
                        "invocation": {},
                        "retryable": error in ("ResourceError", "TransientError"),
                    }
                )
                history.append(
                    {
                        "entry_id": i + 1,
                        "event_key": f"bench:{i}",
                        "attempt": 1,
                        "run_id": f"run{i % 500}",
                        "error_type": error,
                        "resources": {"mem_mb": 4000},
                        "source": "snakemake-log",
                        "created_at": when,
                    }
                )
            conn.execute(insert(DeadLetterEntry), rows)
            conn.execute(insert(AttemptHistory), history)
    return time.perf_counter() - began


def timed(func, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        func()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), max(samples)


def cli_time(args: list[str], db_path: Path, repeat: int) -> tuple[float, float]:
    env = dict(os.environ, NEUROFLOW_DB=str(db_path))
    command = [sys.executable, "-m", "neuroflow_recover.cli", *args]

    def call():
        subprocess.run(command, env=env, check=True, capture_output=True)

    return timed(call, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="neuroflow-dlq-bench-") as tmp:
        db_path = Path(tmp) / "dlq.db"
        db = open_database(str(db_path), Path(tmp))
        fill_s = fill(db, args.entries)
        size_mb = db_path.stat().st_size / 1e6
        print(
            f"filled {args.entries:,} entries (+ history) in {fill_s:.1f} s; file {size_mb:.1f} MB"
        )
        with db.sessions() as session:
            cases = {
                "list (unresolved, limit 20)": lambda: list_entries(session),
                "list --pipeline qsiprep": lambda: list_entries(session, "qsiprep"),
                "list --all --limit 100": lambda: list_entries(
                    session, include_resolved=True, limit=100
                ),
                "stats": lambda: queue_stats(session),
            }
            print(f"{'library call':34s} {'median':>10s} {'max':>10s}")
            for name, func in cases.items():
                session.expunge_all()
                median, worst = timed(func, args.repeat)
                print(f"{name:34s} {median * 1000:8.1f} ms {worst * 1000:8.1f} ms")
            stats = queue_stats(session)
            print(f"  (total {stats['total']:,}, unresolved {stats['unresolved']:,})")
        db.dispose()
        print(f"{'command (fresh process)':34s} {'median':>10s} {'max':>10s}")
        for name, cli_args in {
            "neuroflow-recover list": ["list"],
            "neuroflow-recover stats": ["stats"],
            "neuroflow-recover stats --format csv": ["stats", "--format", "csv"],
        }.items():
            median, worst = cli_time(cli_args, db_path, max(1, args.repeat // 2))
            print(f"{name:34s} {median * 1000:8.1f} ms {worst * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
