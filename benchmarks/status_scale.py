#!/usr/bin/env python3
"""How fast is `neuroflow-recover status` on a brain bank of N sessions?

Generates a study of N sessions (2 per subject) whose outputs are in place as after months
of runs (most sessions done, some stopped part-way, some failed with an open dead-letter
entry, some new), then times the library call behind `status` (build_board: sheet, layout,
queue, outputs on disk) and its renderings, side by side with `find` listing the same
output tree (the floor of looking at every file). Targets: 10,000 sessions < 5 s,
100,000 < 30 s. Output files are hard links of one empty file (no inode each).

    .venv/bin/python benchmarks/status_scale.py --sessions 10000 [--html status.html]
    .venv/bin/python benchmarks/status_scale.py --sessions 100000
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import scratch  # noqa: E402

from neuroflow_recover.cli.render import render_status_csv, render_status_table  # noqa: E402
from neuroflow_recover.cli.status_html import render_status_html  # noqa: E402
from neuroflow_recover.queue.database import open_database  # noqa: E402
from neuroflow_recover.queue.entries import AttemptEvent, JobFailure, dead_letter  # noqa: E402
from neuroflow_recover.queue.status import STAGES, build_board, stage_outputs  # noqa: E402
from neuroflow_recover.workflow.config import load_config  # noqa: E402
from neuroflow_recover.workflow.layout import STAGE_RULE, Layout  # noqa: E402
from neuroflow_recover.workflow.sheet import load_sessions  # noqa: E402

# where a session's pipeline stands: (probability, stages done, stage that failed or None)
MIX = (
    (0.86, 4, None),  # all done
    (0.04, 3, None),  # QSIParc still to run
    (0.03, 0, "bids_conversion"),  # corrupt DICOMs
    (0.02, 2, "qsirecon"),  # e.g. a licence problem
    (0.01, 3, "qsiparc"),
    (0.04, 0, None),  # new sessions, nothing run yet
)
ERRORS = {
    "bids_conversion": "ValidationError",
    "qsiprep": "ResourceError",
    "qsirecon": "ConfigurationError",
    "qsiparc": "TransientError",
}


def make_study(root: Path, n: int, seed: int = 11) -> list[tuple[str, str, str | None]]:
    """Sheet, config and outputs of `n` sessions; returns the failures (subject, session,
    stage)."""
    rows = ["participant_id\tsession_id\tdicom_dir"]
    for i in range(n):
        rows.append(f"{i // 2 + 1:06d}\t{i % 2 + 1:02d}\tdicom/{i}")
    (root / "sessions.tsv").write_text("\n".join(rows) + "\n")
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(
        "sessions: sessions.tsv\noutput_dir: results\nheuristic: h.py\n"
        "freesurfer_license: l.txt\ntemplateflow_home: null\n"
    )
    cfg = load_config(root)
    layout = Layout.from_config(cfg)
    links = _Links(root / "empty")
    rng = random.Random(seed)
    failures = []
    for s in load_sessions(root / "sessions.tsv"):
        done, failed = _pick(rng)
        for stage in STAGES[:done]:
            for path in stage_outputs(layout, stage, s):
                links.make(root / path)
        if failed is not None:
            failures.append((s.subject, s.session, failed))
    return failures


def _pick(rng: random.Random) -> tuple[int, str | None]:
    roll = rng.random()
    for chance, done, failed in MIX:
        if roll < chance:
            return done, failed
        roll -= chance
    return 4, None


class _Links:
    """Empty files as hard links of a few sources (a file takes at most ~65,000 links)."""

    PER_SOURCE = 60_000

    def __init__(self, base: Path):
        self.base = base
        self.count = 0
        self.made: set[str] = set()

    def make(self, target: Path) -> None:
        if self.count % self.PER_SOURCE == 0:
            self.source = self.base.with_name(f"{self.base.name}-{self.count // self.PER_SOURCE}")
            self.source.write_bytes(b"")
        parent = str(target.parent)
        if parent not in self.made:
            os.makedirs(parent, exist_ok=True)
            self.made.add(parent)
        try:
            os.link(self.source, target)
        except FileExistsError:  # a subject's QSIPrep report, shared by its sessions
            return
        self.count += 1


def queue_failures(root: Path, failures: list) -> None:
    db = open_database(None, root)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    with db.sessions() as session, session.begin():
        for i, (subject, sess, stage) in enumerate(failures):
            wildcards = {"subject": subject} if stage == "qsiprep" else {
                "subject": subject, "session": sess}  # fmt: skip
            when = start + timedelta(hours=i % (24 * 80))
            dead_letter(
                session,
                JobFailure(
                    rule=STAGE_RULE[stage], wildcards=wildcards, pipeline_name=stage,
                    error_type=ERRORS[stage], retryable=stage in ("qsiparc",),
                    error_message="generated", evidence=f"generated {ERRORS[stage]} evidence",
                    failed_at=when,
                    events=[AttemptEvent(event_key=f"bench:{i}", source="snakemake-log",
                                         ended_at=when)],
                ),
            )  # fmt: skip
    db.dispose()


def timed(label: str, func):
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:7.2f} s")
    return result, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--html", type=Path, default=None, help="also write the HTML report")
    parser.add_argument("--keep", action="store_true", help="keep the generated study")
    args = parser.parse_args(argv)
    with scratch("neuroflow-status-scale-", args.keep) as root:
        failures, _ = timed(f"generate {args.sessions} sessions", lambda: make_study(
            root, args.sessions))  # fmt: skip
        timed(f"queue {len(failures)} failures", lambda: queue_failures(root, failures))
        _, find_s = timed("floor: find results -type f", lambda: subprocess.run(
            ["find", str(root / "results"), "-type", "f"], check=True,
            stdout=subprocess.DEVNULL))  # fmt: skip
        cfg = load_config(root)
        db = open_database(None, root, create=False)

        def board():
            sheet = load_sessions(root / "sessions.tsv")
            with db.sessions() as session:
                return build_board(session, root, cfg, sheet)

        result, board_s = timed("status: sheet + board", board)
        _, table_s = timed("status: render table", lambda: render_status_table(result))
        _, csv_s = timed("status: render CSV", lambda: render_status_csv(result))
        page, html_s = timed("status: render HTML", lambda: render_status_html(result))
        target = 5.0 if args.sessions <= 10_000 else 30.0
        total = board_s + html_s
        print(f"counts: {result.counts()}")
        print(
            f"status (board + HTML) {total:.2f} s for {args.sessions} sessions "
            f"(target < {target:.0f} s): {'met' if total < target else 'NOT met'}; "
            f"board/find = {board_s / find_s:.2f}"
        )
        if args.html:
            args.html.write_text(page)
            print(f"wrote {args.html} ({len(page) / 1e6:.1f} MB)")
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
