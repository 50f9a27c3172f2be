"""Stress the dead-letter queue the way a lab sharing one queue would: many processes at once.

Makes a toy Snakemake workflow (tests/dlq_workflows.py) whose JOBS jobs fail in each of LOGS
runs, ingests its logs once sequentially (the reference), then per backend starts PROCESSES
`neuroflow-recover ingest` processes at once on a fresh database (every other one with the
logs in another order or a subset) plus PROCESSES/2 `resolve` processes, and prints:
processes, logs, entries, errors (non-zero exits or tracebacks), duplicates (open entries
per job beyond one, repeated attempt keys), losses (reference attempts missing) and the time.
Not a test: nothing is asserted, the figures are printed side by side.

    .venv/bin/python benchmarks/dlq_stress.py [--processes 8] [--jobs 8] [--logs 4]
        [--pg-url postgresql+psycopg://neuroflow@127.0.0.1:55432/postgres]

PostgreSQL: --pg-url or env NEUROFLOW_TEST_PG_URL, e.g. a server started with
tests/postgres/start-local-postgres.sh (stop it with stop-local-postgres.sh); without one that
backend is reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from backends import create_pg_database, drop_pg_database  # noqa: E402
from dlq_workflows import behave, main_logs, make_toy_workflow, snakemake  # noqa: E402
from neuroflow_recover.queue.database import open_database  # noqa: E402
from neuroflow_recover.queue.models import AttemptHistory, DeadLetterEntry  # noqa: E402


def make_logs(root: Path, jobs: int, logs: int) -> Path:
    pairs = [(f"{n // 2 + 1:02d}", str(n % 2 + 1)) for n in range(jobs)]
    make_toy_workflow(root, pairs)
    for subject, session in pairs:
        behave(root, subject, session, "until|never|1|MemoryError")
    for _ in range(logs):
        snakemake(root, "--keep-going")
    return root


def start(root: Path, db: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ) | {"NEUROFLOW_DB": db}
    return subprocess.Popen(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def content(root: Path, db: str) -> tuple[dict[str, int], list[str]]:
    """(open entries per job key, every attempt key)."""
    database = open_database(db, root, create=False, readonly=True)
    with database.sessions() as session:
        per_job: dict[str, int] = {}
        for key in session.scalars(
            select(DeadLetterEntry.job_key).where(DeadLetterEntry.resolved.is_(False))
        ):
            per_job[key] = per_job.get(key, 0) + 1
        keys = list(session.scalars(select(AttemptHistory.event_key)))
        entries = len(list(session.scalars(select(DeadLetterEntry.id))))
    database.dispose()
    return per_job | {"__entries__": entries}, keys


def stress(root: Path, db: str, processes: int, reference: list[str], seed: int) -> dict:
    rng = random.Random(seed)
    logs = [str(p) for p in main_logs(root)]
    first = start(root, db, "ingest", logs[0])  # some entries to resolve meanwhile
    first.wait()
    started = time.perf_counter()
    procs = []
    for n in range(processes):
        order = [] if n % 2 == 0 else rng.sample(logs, rng.randint(1, len(logs)))
        procs.append(start(root, db, "ingest", *order))
    procs += [start(root, db, "resolve", str(n + 1), "--notes", "stress")
              for n in range(processes // 2)]  # fmt: skip
    errors = 0
    for proc in procs:
        _, err = proc.communicate()
        errors += int(proc.returncode != 0 or "Traceback" in err)
    elapsed = time.perf_counter() - started
    per_job, keys = content(root, db)
    entries = per_job.pop("__entries__")
    duplicates = sum(count - 1 for count in per_job.values()) + len(keys) - len(set(keys))
    losses = len(set(reference) - set(keys))
    return {"processes": len(procs), "logs": len(logs), "entries": entries, "errors": errors,
            "duplicates": duplicates, "losses": losses, "seconds": round(elapsed, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--logs", type=int, default=4)
    parser.add_argument("--pg-url", default=os.environ.get("NEUROFLOW_TEST_PG_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlq-stress-") as tmp:
        source = make_logs(Path(tmp) / "wf", args.jobs, args.logs)
        ref_root = Path(tmp) / "reference"
        shutil.copytree(source, ref_root)
        ref_db = f"sqlite:///{ref_root / 'ref.db'}"
        start(ref_root, ref_db, "ingest").wait()
        _, reference = content(ref_root, ref_db)
        print(f"reference (one sequential ingest): {len(reference)} attempts of {args.jobs} jobs "
              f"in {args.logs} logs")  # fmt: skip
        header = "backend     processes  logs  entries  errors  duplicates  losses  seconds"
        print(header)
        for backend in ("sqlite", "postgresql"):
            root = Path(tmp) / backend
            shutil.copytree(source, root)
            if backend == "sqlite":
                db = f"sqlite:///{root / 'queue.db'}"
            elif not args.pg_url:
                print(f"{backend:<11} skipped (no --pg-url / NEUROFLOW_TEST_PG_URL)")
                continue
            else:
                db = create_pg_database(args.pg_url)
            try:
                row = stress(root, db, args.processes, reference, seed=14)
            finally:
                if backend == "postgresql":
                    drop_pg_database(args.pg_url, db)
            print(f"{backend:<11} {row['processes']:>9}  {row['logs']:>4}  {row['entries']:>7}  "
                  f"{row['errors']:>6}  {row['duplicates']:>10}  {row['losses']:>6}  "
                  f"{row['seconds']:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
