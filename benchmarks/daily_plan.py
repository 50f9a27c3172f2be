#!/usr/bin/env python3
"""The daily run of a brain bank: N sessions finished, 10 new ones in the sheet.

Side by side on the same generated study (outputs in place, a recorded last run):
* the full plan: `snakemake -n` over the whole sheet (what a plain run asks Snakemake for);
* the pending-only plan of `neuroflow-recover run`: neuroflow's own plan (stat of every
  declared output) plus `snakemake -n` over the sheet of the subjects with work;
* a job's own start-up (what every SLURM job pays): the command line the SLURM plugin gives
  a job (`--target-jobs`, `--mode remote`, ...; dry, so parse + one-job DAG) with the whole
  sheet, in the environment the main process hands its jobs (PYTHONSAFEPATH, see
  neuroflow_recover/environment.py), side by side with Snakemake alone (the same command on a one-rule
  Snakefile) in the plain environment and in the jobs' environment.
Prints times, peak memory and the ratios. Goals: pending-only < 5 s at 10,000 sessions,
< 15 s at 100,000; a job's start-up <= 3 s and <= 300 MB.

    .venv/bin/python benchmarks/daily_plan.py --sessions 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import measured, scratch  # noqa: E402

from neuroflow_recover import environment  # noqa: E402
from neuroflow_recover.recover.plan import make_plan, record_state  # noqa: E402
from neuroflow_recover.workflow.config import load_config  # noqa: E402
from neuroflow_recover.workflow.layout import Layout  # noqa: E402
from neuroflow_recover.workflow.sheet import load_sessions  # noqa: E402

NEW = 10  # sessions added overnight
TRIGGERS = ["--rerun-triggers", "mtime", "input"]


def make_study(root: Path, n: int) -> None:
    """Sheet, config, DICOM folders and every output of `n` finished sessions."""
    rows = ["participant_id\tsession_id\tdicom_dir"]
    for i in range(n):
        subject, session = f"{i // 2 + 1:06d}", f"{i % 2 + 1:02d}"
        rows.append(f"{subject}\t{session}\tdicom/{i}")
        (root / "dicom" / str(i)).mkdir(parents=True)
    (root / "sessions.tsv").write_text("\n".join(rows) + "\n")
    (root / "h.py").write_text("")
    (root / "l.txt").write_text("licence\n")
    (root / "config.yaml").write_text(
        "sessions: sessions.tsv\noutput_dir: results\nheuristic: h.py\n"
        "freesurfer_license: l.txt\ntemplateflow_home: null\n"
    )
    cfg = load_config(root, ["config.yaml"])
    layout = Layout.from_config(cfg).within(root)
    sources = _Sources(root)
    sources.place(layout.dataset_description, 0)
    for s in load_sessions(root / "sessions.tsv"):
        for rule, stage in (("heudiconv_convert", 0), ("qsiprep_preprocess", 1),
                            ("qsirecon_reconstruct", 2), ("qsiparc_parcellate", 3)):  # fmt: skip
            wildcards = {"subject": s.subject} if stage == 1 else s.wildcards
            for path in layout.rule_outputs(rule, wildcards):
                sources.place(path, stage)
    record_state(root, cfg, load_sessions(root / "sessions.tsv"), REPO / "workflow")
    with open(root / "sessions.tsv", "a") as sheet:
        for i in range(NEW):
            sheet.write(f"new{i:03d}\t01\tdicom/new{i}\n")
            (root / "dicom" / f"new{i}").mkdir()


class _Sources:
    """Hard links of one empty file per stage (stage k older than stage k+1)."""

    PER_SOURCE = 60_000  # a file takes ~65,000 links

    def __init__(self, root: Path):
        self.root = root
        self.count = [0, 0, 0, 0]
        self.made: set[str] = set()

    def place(self, path: str, stage: int) -> None:
        index, self.count[stage] = self.count[stage] // self.PER_SOURCE, self.count[stage] + 1
        source = self.root / f".source-{stage}-{index}"
        if not source.exists():
            source.write_text("")
            os.utime(source, (1_700_000_000 + 100 * stage,) * 2)
        parent = os.path.dirname(path)
        if parent not in self.made:
            os.makedirs(parent, exist_ok=True)
            self.made.add(parent)
        try:
            os.link(source, path)
        except FileExistsError:  # a subject's QSIPrep report, shared by its sessions
            pass


# what the SLURM plugin's job command line adds (fixture logs of tests/slurm), dry
JOBSTEP = ["--allowed-rules", "qsiparc_parcellate", "--cores", "1", "--attempt", "1", "--force",
           "--target-files-omit-workdir-adjustment", "--max-inventory-time", "0", "--nocolor",
           "--no-hooks", "--nolock", "--ignore-incomplete", "--mode", "remote", "--target-jobs",
           "qsiparc_parcellate:subject=000001,session=01"]  # fmt: skip
FLOOR_SNAKEFILE = 'rule qsiparc_parcellate:\n    output: "x/{subject}_{session}"\n    shell: "touch {output}"\n'


def dry_run(root: Path, *args: str, sheet: Path | None = None, snakefile: Path | None = None,
            targets: tuple[str, ...] = (), as_job: bool = False) -> dict:  # fmt: skip
    """One `snakemake -n` in `root` (`as_job`: in the environment the main process gives
    its jobs): wall time, CPU, this child's peak memory, jobs."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in (environment.PYTHON_SAFE_PATH, environment.SAFE_PATH_SET):
        env.pop(name, None)
    if as_job:
        environment.keep_workdir_off_job_path(env)
    env.pop(environment.PLAN_SHEET, None)
    if sheet is not None:
        env[environment.PLAN_SHEET] = str(sheet)
    command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile",
               str(snakefile or REPO / "workflow" / "Snakefile"), "--configfile", "config.yaml",
               "--workflow-profile", "none", *TRIGGERS, *args, "--", *targets]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out:
        usage = measured(command, root, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read()
    if usage.code != 0:
        sys.exit(f"snakemake failed:\n{text[-3000:]}")
    shutil.rmtree(root / ".snakemake", ignore_errors=True)
    jobs = [line.split()[1] for line in text.splitlines() if line.startswith("total ")]
    return {"wall": usage.wall, "cpu": usage.cpu, "mb": usage.mb, "jobs": int(jobs[0]) if jobs else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="no full plan (minutes at 100,000)")
    args = parser.parse_args(argv)
    with scratch("neuroflow-daily-", args.keep) as root:
        start = time.perf_counter()
        make_study(root, args.sessions)
        print(f"study: {args.sessions} finished sessions + {NEW} new "
              f"({time.perf_counter() - start:.0f} s to generate)")  # fmt: skip
        full = None if args.skip_full else dry_run(root)
        start = time.perf_counter()
        cfg = load_config(root, ["config.yaml"])
        plan = make_plan(root, cfg, load_sessions(root / "sessions.tsv"), REPO / "workflow",
                         [], {"mtime", "input"})  # fmt: skip
        planning = time.perf_counter() - start
        assert not plan.full, plan.reason
        pending = dry_run(root, sheet=plan.sheet)
        daily = planning + pending["wall"]
        if full:
            print(f"full plan:     {full['wall']:.1f} s wall, {full['mb']:.0f} MB, {full['jobs']} jobs")
        print(f"pending only:  {daily:.1f} s ({planning:.1f} s neuroflow's plan + "
              f"{pending['wall']:.1f} s Snakemake), {pending['mb']:.0f} MB, {pending['jobs']} jobs"
              + (f"; pending/full = {daily / full['wall']:.3f}" if full else ""))
        (root / "floor.smk").write_text(FLOOR_SNAKEFILE)
        ours, floor, floor_as_job = [], [], []
        for _ in range(3):  # alternating: the machine's load changes
            ours.append(dry_run(root, *JOBSTEP, as_job=True))
            floor.append(dry_run(root, *JOBSTEP, snakefile=root / "floor.smk"))
            floor_as_job.append(dry_run(root, *JOBSTEP, snakefile=root / "floor.smk", as_job=True))
        job, bare, bare_as_job = (min(runs, key=lambda r: r["wall"]) for runs in (ours, floor, floor_as_job))
        if {job["jobs"], bare["jobs"], bare_as_job["jobs"]} != {1}:
            sys.exit(f"a job's start-up should plan one job: {job['jobs']}, {bare['jobs']}")
        print(f"one job's start-up (SLURM job command line, best of 3): {job['wall']:.1f} s, "
              f"{job['mb']:.0f} MB; Snakemake alone {bare['wall']:.1f} s, {bare['mb']:.0f} MB "
              f"(in the jobs' environment {bare_as_job['wall']:.1f} s, {bare_as_job['mb']:.0f} MB); "
              f"ratio {job['wall'] / bare['wall']:.2f} time, {job['mb'] / bare['mb']:.2f} memory "
              f"({job['wall'] / bare_as_job['wall']:.2f}, {job['mb'] / bare_as_job['mb']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
