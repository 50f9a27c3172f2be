"""Run the probe workflow (tests/slurm/probe/Snakefile) on the local SLURM cluster.

Shared by the slurm test suite (tests/slurm/test_slurm_*.py) and by the fixture writer:

    .venv/bin/python tests/slurm/probe.py --fixtures [SCENARIO ...]

which re-runs the scenarios and rewrites tests/fixtures/logs/slurm_<scenario>/ from the
REAL logs: the main log at the folder root, the `.snakemake/slurm_logs/` tree and the rule
logs under `logs/` with their relative paths, plus `scenario.txt` (command line) and
`sacct.txt` (the accounting rows of every SLURM job of the run). As in
tests/fixtures/make_fixtures.py, the temporary run directory is replaced by
`/tmp/neuroflow-fixture/slurm_<scenario>` and the virtualenv's bin directory by
`.venv/bin` (its root by `.venv`); nothing else is changed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE_SNAKEFILE = HERE / "probe" / "Snakefile"
FIXTURES = HERE.parent / "fixtures" / "logs"
BIN = Path(sys.executable).parent
PLACEHOLDER = "/tmp/neuroflow-fixture"
PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "debug")

# Test overrides layered on top of whatever profile is used: short status checks.
# (The plugin waits init-seconds before the first check and then adds 10 s to the interval
# after every round in which no job succeeded, up to 180 s: see docs/slurm-local-notes.md.)
STATUS_OVERRIDES = [
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "2",
]

_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.*?)\)\.")
_COMPLETE_LOG = re.compile(r"Complete log\(s\): (\S+)")
_RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def target(rule: str, subject: str = "01", session: str = "1") -> str:
    return f"results/{subject}/{session}/{rule}.txt"


@dataclass(frozen=True)
class Scenario:
    name: str
    targets: tuple[str, ...]
    extra_args: tuple[str, ...] = ()
    expect_success: bool = False
    about: str = ""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "complete",
            (target("probe_complete"),),
            expect_success=True,
            about="one job completes (its SLURM log is deleted by the plugin)",
        ),
        Scenario(
            "fail", (target("probe_fail"),), about="exit 1 with a message on stderr -> FAILED"
        ),
        Scenario(
            "oom",
            (target("probe_oom"),),
            about="600 MB with mem_mb=300 -> OverMemoryKill, state FAILED",
        ),
        Scenario(
            "timeout", (target("probe_timeout"),), about="runtime=1 min, sleeps 120 s -> TIMEOUT"
        ),
        Scenario(
            "resubmit_mem",
            (target("probe_growmem"),),
            expect_success=True,
            about="killed for memory at 300 MB, resubmitted with 900 MB, completes",
        ),
        Scenario(
            "resubmit_time",
            (target("probe_growtime"),),
            expect_success=True,
            about="TIMEOUT at 1 min, resubmitted with 3 min and the same memory, completes",
        ),
        Scenario(
            "retry_in_allocation",
            (target("probe_trap"),),
            about="unconditional rule-level retries: the retry also runs INSIDE the "
            "SLURM job (same allocation), then the main process resubmits",
        ),
        Scenario(
            "keep_going_mixed",
            (
                target("probe_complete", "01", "1"),
                target("probe_fail", "02", "1"),
                target("probe_oom", "01", "2"),
                target("probe_growmem", "02", "2"),
            ),
            extra_args=("--keep-going",),
            about="four jobs of two subjects in one run with --keep-going",
        ),
    ]
}


@dataclass
class ProbeRun:
    scenario: Scenario
    workdir: Path
    command: list[str]
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0
    submissions: list[tuple[str, str, str]] = field(default_factory=list)  # (jobid, slurm id, log)

    @property
    def main_log(self) -> Path:
        found = _COMPLETE_LOG.findall(self.output)
        if not found:
            raise AssertionError(
                f"no 'Complete log(s):' line in the output of {self.scenario.name}"
            )
        return Path(found[-1])

    @property
    def slurm_ids(self) -> list[str]:
        return [slurm_id for _, slurm_id, _ in self.submissions]

    @property
    def run_id(self) -> str | None:
        found = _RUN_ID.search(self.output)
        return found.group(1) if found else None


def cluster_problem() -> str | None:
    """None when the local cluster answers, otherwise why not."""
    for tool in ("sbatch", "squeue", "sacct", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (start it with tests/slurm/start-local-slurm.sh)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    if "UP" not in ping.stdout:
        return f"slurmctld is not answering: {ping.stdout.strip() or ping.stderr.strip()}"
    return None


def env() -> dict[str, str]:
    """The environment for Snakemake: the virtualenv first on PATH (the SLURM job inherits
    it, so `python3` in the probe rules and `snakemake` in the job step are the venv's)."""
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    for key in [k for k in out if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del out[key]  # never look like a job context to the plugin
    return out


def cli_env() -> dict[str, str]:
    """The environment of `neuroflow-recover` on the cluster: env(), no NEUROFLOW_DB, the
    profile's partition and account, retry delays scaled down."""
    out = env()  # the venv's bin first: the jobs call `neuroflow-recover exec`
    out.pop("NEUROFLOW_DB", None)
    out.update(
        NEUROFLOW_SLURM_PARTITION=PARTITION,
        NEUROFLOW_SLURM_ACCOUNT="root",
        NEUROFLOW_DELAY_SCALE="0.01",
    )
    return out


def snakemake_command(
    targets: tuple[str, ...] | list[str], extra: tuple[str, ...] | list[str] = ()
) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "--executor",
        "slurm",
        "--jobs",
        "8",
        "--default-resources",
        f"slurm_partition={PARTITION}",
        "slurm_account=root",
        *STATUS_OVERRIDES,
        "--latency-wait",
        "5",
        *extra,
        *targets,
    ]


def start(scenario: Scenario, workdir: Path) -> tuple[ProbeRun, subprocess.Popen]:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE_SNAKEFILE, workdir / "Snakefile")
    run = ProbeRun(scenario, workdir, snakemake_command(scenario.targets, scenario.extra_args))
    with open(workdir / "snakemake.out", "w") as out:  # a file: a full pipe would block
        proc = subprocess.Popen(
            run.command,
            cwd=workdir,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return run, proc


def stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGINT first (Snakemake then cancels its SLURM jobs and exits; SIGTERM is not enough
    when the plugin has lost its jobs), SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def collect(run: ProbeRun, proc: subprocess.Popen, seconds: float) -> ProbeRun:
    run.returncode = proc.returncode
    run.output = (run.workdir / "snakemake.out").read_text(errors="replace")
    run.seconds = seconds
    run.submissions = _SUBMITTED.findall(run.output)
    return run


def run_scenarios(names: list[str], base: Path, timeout: float = 480) -> dict[str, ProbeRun]:
    """Run the scenarios concurrently (each in base/<name>), wait for all (at most
    `timeout` seconds, then stop the rest)."""
    started = time.monotonic()
    procs = {name: start(SCENARIOS[name], base / name) for name in names}
    ended: dict[str, float] = {}
    while len(ended) < len(procs) and time.monotonic() - started < timeout:
        for name, (_, proc) in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.monotonic() - started
        time.sleep(0.5)
    for name, (run, proc) in procs.items():
        if name not in ended:
            stop(proc)
            ended[name] = time.monotonic() - started
            with open(run.workdir / "snakemake.out", "a") as out:
                out.write(f"\n[probe] stopped after {timeout:.0f} s\n")
    return {name: collect(run, proc, ended[name]) for name, (run, proc) in procs.items()}


@dataclass(frozen=True)
class SacctRow:
    job_id: str
    req_mem: str
    timelimit: str
    state: str


def sacct(slurm_ids: list[str], tries: int = 20) -> list[SacctRow]:
    """Job-level accounting rows (waits a little: slurmdbd lags behind slurmctld)."""
    if not slurm_ids:
        return []
    cmd = [
        "sacct",
        "-X",
        "-n",
        "-P",
        "-j",
        ",".join(slurm_ids),
        "-o",
        "JobID,ReqMem,Timelimit,State",
    ]
    rows: list[SacctRow] = []
    for _ in range(tries):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        rows = [
            SacctRow(*line.split("|")[:4]) for line in out.splitlines() if line.count("|") >= 3
        ]
        if len(rows) == len(slurm_ids) and not any(
            r.state in ("RUNNING", "PENDING") for r in rows
        ):
            break
        time.sleep(1)
    return rows


def sanitize(text: str, workdir: Path, name: str) -> str:
    text = text.replace(str(workdir), f"{PLACEHOLDER}/slurm_{name}")
    text = text.replace(str(BIN), ".venv/bin")
    return text.replace(str(BIN.parent), ".venv")


def save_fixture(run: ProbeRun, dest_root: Path = FIXTURES) -> Path:
    """Copy the run's real logs to dest_root/slurm_<scenario>/ (replacing it)."""
    name = run.scenario.name
    dest = dest_root / f"slurm_{name}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    main_log = run.main_log
    files = [main_log]
    for sub in (run.workdir / ".snakemake" / "slurm_logs", run.workdir / "logs"):
        if sub.is_dir():
            files += sorted(p for p in sub.rglob("*") if p.is_file())
    for src in files:
        rel = Path(main_log.name) if src == main_log else src.relative_to(run.workdir)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(sanitize(src.read_text(errors="replace"), run.workdir, name))
    cmd = " ".join(["snakemake", *run.command[1:]])
    (dest / "scenario.txt").write_text(
        f"{sanitize(cmd, run.workdir, name)}\n# {run.scenario.about}\n# exit status {run.returncode}\n"
    )
    rows = sacct(run.slurm_ids)
    (dest / "sacct.txt").write_text(
        "JobID|ReqMem|Timelimit|State\n"
        + "".join(f"{r.job_id}|{r.req_mem}|{r.timelimit}|{r.state}\n" for r in rows)
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"default: all of {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--fixtures",
        action="store_true",
        help="rewrite tests/fixtures/logs/slurm_<scenario>/ from the runs",
    )
    args = parser.parse_args(argv)
    problem = cluster_problem()
    if problem:
        print(f"no SLURM cluster: {problem}", file=sys.stderr)
        return 2
    names = args.scenarios or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="neuroflow-slurm-probe-") as tmp:
        runs = run_scenarios(names, Path(tmp))
        for name, run in runs.items():
            print(
                f"{name}: exit {run.returncode} in {run.seconds:.0f} s, SLURM jobs {run.slurm_ids}"
            )
            if args.fixtures:
                print(f"  -> {save_fixture(run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
