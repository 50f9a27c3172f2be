"""A tiny real Snakemake workflow for the dead-letter tests (ingest, runner, concurrency, CLI).

One rule, `toy_step`, writes `results/<subject>/<session>.txt`. What a job does is decided by
a file `behaviour/<subject>_<session>` (absent: succeed):

* `until|<marker>|<exit code>|<message>` fails (printing the message to stderr, into the rule
  log) until the file `<marker>` exists;
* `times|<n>|<exit code>|<message>` fails the first n times it runs;
* `each|<n>|<exit code>|<m1> ;; <m2> ...` fails the first n times, run k with message k;
  in every message `{run}` becomes the number of earlier runs (0, 1, ...);
* `wait|<file>|0|` writes `started_<subject>_<session>`, then waits until `<file>` exists
  and succeeds (a Snakemake run that holds its lock as long as a test needs).

With `use_exec=True` the tool runs through the real step runner (`neuroflow-recover exec`),
which writes attempt records under `.neuroflow/attempts/`; `retries=N` gives the rule
Snakemake's `retries: N` (immediate retries, attempt = 1 .. N+1).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from helpers import VENV_BIN

SNAKEFILE = """\
JOBS = [line.split() for line in open("jobs.txt").read().splitlines() if line.strip()]


rule all:
    input:
        [f"results/{{s}}/{{t}}.txt" for s, t in JOBS],


rule toy_step:
    output:
        result="results/{{subject}}/{{session}}.txt",
    log:
        "logs/toy_step/{{subject}}_{{session}}.log",
    resources:
        attempt=lambda wildcards, attempt: attempt,
    retries: {retries}
    shell:
        "{command}"
"""

PLAIN = (
    "{python} step.py {{wildcards.subject}} {{wildcards.session}} {{output.result}}"
    " > {{log}} 2>&1"
)
VIA_EXEC = (
    "{python} -m neuroflow_recover.cli exec --rule toy_step"
    " --wildcards subject={{wildcards.subject}} --wildcards session={{wildcards.session}}"
    " --attempt {{resources.attempt}} --log {{log}} --expect {{output.result}}"
    " --mem-mb 100 --runtime 5 --threads 1"
    " -- {python} step.py {{wildcards.subject}} {{wildcards.session}} {{output.result}}"
)

STEP = """\
import pathlib
import sys
import time

subject, session, out = sys.argv[1:4]
key = f"{subject}_{session}"
behaviour = pathlib.Path("behaviour") / key
if behaviour.exists():
    mode, arg, code, message = behaviour.read_text().strip().split("|", 3)
    if mode == "wait":  # hold the job (and Snakemake's lock) until the file exists
        pathlib.Path(f"started_{key}").write_text("started\\n")
        deadline = time.monotonic() + 600
        while not pathlib.Path(arg).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    counter = pathlib.Path("counts") / key
    counter.parent.mkdir(exist_ok=True)
    runs = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(runs + 1))
    if (mode == "until" and not pathlib.Path(arg).exists()) or (
        mode in ("times", "each") and runs < int(arg)
    ):
        if mode == "each":
            message = message.split(" ;; ")[runs % len(message.split(" ;; "))]
        print("working on", key, flush=True)
        print(message.replace("{run}", str(runs)), file=sys.stderr, flush=True)
        sys.exit(int(code))
pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
pathlib.Path(out).write_text("ok\\n")
"""

# a config for the recovery CLI: the default policy (3 attempts) applies to toy_step
CONFIG = """\
error_handling:
  default_retry:
    max_attempts: 3
    initial_delay_minutes: 1
    max_delay_minutes: 5
"""



def make_toy_workflow(
    root: Path, jobs: list[tuple[str, str]], *, use_exec: bool = False, retries: int = 0
) -> Path:
    """Write the toy workflow into `root`; returns it. `retries`: the rule's `retries:`."""
    root.mkdir(parents=True, exist_ok=True)
    template = VIA_EXEC if use_exec else PLAIN
    command = template.format(python=shlex.quote(sys.executable))
    (root / "Snakefile").write_text(SNAKEFILE.format(command=command, retries=int(retries)))
    (root / "step.py").write_text(STEP)
    (root / "jobs.txt").write_text("".join(f"{s} {t}\n" for s, t in jobs))
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "config.yaml").write_text(CONFIG)
    (root / "behaviour").mkdir(exist_ok=True)
    return root


def behave(root: Path, subject: str, session: str, spec: str) -> None:
    (root / "behaviour" / f"{subject}_{session}").write_text(spec + "\n")


def snakemake(root: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """A plain Snakemake run in `root` (to make logs); output captured."""
    return subprocess.run(
        [str(VENV_BIN / "snakemake"), "--cores", "1", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=check,
    )


def recover(root: Path, *args: str, env: dict | None = None, timeout: float = 900):
    """`neuroflow-recover -d root ARGS` in a real subprocess."""
    full_env = dict(os.environ)
    full_env.pop("NEUROFLOW_DB", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "neuroflow_recover.cli", "-d", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def main_logs(root: Path) -> list[Path]:
    return sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
