#!/usr/bin/env python3
"""Ingest throughput: N failed jobs (a rule log of ~1 MB each) against `grep -E -f`.

Real Snakemake runs (1,000 jobs each) of a one-rule workflow whose N jobs all fail write the
main logs; each job's rule log is one of 50 texts of ~1 MB: nipype/QSIPrep-style progress
lines with a real failure message (from the development corpus) near the end. The jobs run no step runner,
so `ingest` classifies every job from its rule log (the expensive path: with attempt records
the runner already classified). Side by side on the same files, both reading from the page
cache (the files are hard links of the 50 texts; warmed first):

* `neuroflow-recover ingest` of the main logs into a fresh SQLite queue;
* `grep -E -f` with the shipped patterns (converted to ERE; look-aheads dropped, which can
  only make grep match more) over the rule logs and the main logs, matches to a file (with
  stdout on /dev/null GNU grep stops at the first match).

Prints throughput (MB/s of logs), peak memory of each, and ingest/grep throughput (goal
>= 0.5). Memory: peak RSS is printed with the number of jobs; `--logs` 1000 vs 10000 shows
whether it grows with them.

    .venv/bin/python benchmarks/ingest_scale.py --logs 10000
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import Usage, measured, scratch  # noqa: E402

from neuroflow_recover.classify.patterns import shipped_pack  # noqa: E402

TEXTS = 50
RUN = 1000  # failed jobs per Snakemake run (a day's run of a brain bank)
SNAKEFILE = """\
FIRST, COUNT = int(config["first"]), int(config["count"])


rule all:
    input:
        [f"results/{i // 2 + 1:05d}/{i % 2 + 1}.txt" for i in range(FIRST, FIRST + COUNT)],


rule toy_step:
    output:
        "results/{subject}/{session}.txt",
    log:
        "logs/toy_step/{subject}_{session}.log",
    params:
        text=lambda wc: f"texts/{(int(wc.subject) * 2 + int(wc.session)) % %TEXTS%}.log",
    shell:
        "ln -f {params.text} {log}; exit 1"
"""
NODES = ("eddy", "dwi_denoise", "merge_dwis", "hmc_sdc_wf.b0_ref", "ants_reg", "tortoise",
         "dwi_to_t1", "t1_skullstrip", "gradient_plots", "confounds")  # fmt: skip


def rule_log(rng: random.Random, message: str, size: int) -> str:
    """~`size` bytes of a preprocessing tool's progress, the failure near the end."""
    lines: list[str] = []
    total, second = 0, 0
    while total < size:
        node = rng.choice(NODES)
        second += rng.randint(1, 40)
        stamp = f"261130-{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d},{rng.randint(0, 999):03d}"
        chunk = [
            f"{stamp} nipype.workflow INFO:",
            f'\t [Node] Setting-up "qsiprep_wf.sub_{rng.randint(1, 999):03d}_wf.{node}" in '
            f'"/scratch/work/qsiprep_wf/sub_{rng.randint(1, 999):03d}_wf/{node}".',
            f'\t [Node] Executing "{node}" <nipype.interfaces.base.core.CommandLine>',
            f"{stamp} nipype.interface INFO:",
            f"\t stdout {stamp}:Iteration {rng.randint(1, 50)}: residual {rng.random():.6f}",
            f'\t [Node] Finished "{node}", elapsed time {rng.uniform(0.1, 4000):.2f}s.',
        ]
        if rng.random() < 0.05:
            chunk.append(f"{stamp} nipype.workflow WARNING:\n\t Storing result file without outputs")
        text = "\n".join(chunk) + "\n"
        lines.append(text)
        total += len(text)
    tail = ["Traceback (most recent call last):",
            '  File "/opt/conda/lib/python3.10/site-packages/nipype/pipeline/plugins/multiproc.py", line 67',
            message, "Exception raised while executing Node " + rng.choice(NODES)]  # fmt: skip
    return "".join(lines) + "\n".join(tail) + "\n"


def make_study(root: Path, n: int, size: int, seed: int = 5) -> None:
    """The workflow, the 50 texts, and a real failing Snakemake run of `n` jobs."""
    rng = random.Random(seed)
    corpus = REPO / "tests" / "data" / "corpus_development.tsv"
    with open(corpus, newline="") as f:
        messages = [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    (root / "texts").mkdir(parents=True)
    for i in range(TEXTS):
        (root / "texts" / f"{i}.log").write_text(rule_log(rng, rng.choice(messages), size))
    (root / "Snakefile").write_text(SNAKEFILE.replace("%TEXTS%", str(TEXTS)))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for first in range(0, n, RUN):  # Snakemake slows down past ~1,000 failed jobs in one run
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", "--keep-going", "--scheduler",
             "greedy", "--config", f"first={first}", f"count={min(RUN, n - first)}", "--", "all"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    failed = len(list((root / "logs" / "toy_step").iterdir()))
    if failed != n:
        sys.exit(f"expected {n} failed jobs, found {failed} rule logs")


def ere(regex: str) -> str:
    """A Python pattern as GNU ERE: no look-aheads, no (?:, (?P<>, \\d, \\s, \\S."""
    out = regex.replace("(?:", "(")
    out = re.sub(r"\(\?P<\w+>", "(", out)
    while "(?!" in out:  # drop `(?!...)` (balanced): grep then matches more, never less
        start = out.index("(?!")
        depth, i = 0, start
        while True:
            depth += {"(": 1, ")": -1}.get(out[i], 0) if out[i - 1] != "\\" else 0
            if depth == 0:
                break
            i += 1
        out = out[:start] + out[i + 1 :]
    for python, posix in ((r"\d", "0-9"), (r"\s", "[:space:]")):
        out = re.sub(r"(\[[^\]]*?)" + re.escape(python), lambda m, p=posix: m.group(1) + p, out)
        out = out.replace(python, f"[{posix}]")
    return out.replace(r"\S", "[^[:space:]]")


def timed(command: list[str], cwd: Path, out) -> tuple[Usage, str]:
    """The command measured alone, and what it printed on stderr."""
    with tempfile.TemporaryFile() as stderr:
        usage = measured(command, cwd, stdout=out, stderr=stderr)
        stderr.seek(0)
        return usage, stderr.read().decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=10_000, help="failed jobs")
    parser.add_argument("--mb", type=float, default=1.0, help="size of a rule log")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    with scratch("neuroflow-ingest-", args.keep) as root:
        start = time.perf_counter()
        make_study(root, args.logs, int(args.mb * 1_000_000))
        logs = sorted((root / "logs" / "toy_step").iterdir())
        main_log = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
        files = [str(p.relative_to(root)) for p in logs + main_log]
        size = sum(os.path.getsize(root / f) for f in files) / 1e6
        print(f"study: {args.logs} failed jobs, {size:,.0f} MB of logs "
              f"({time.perf_counter() - start:.0f} s to generate)")  # fmt: skip
        patterns = [ere(p.regex) for p in shipped_pack().patterns]
        (root / "patterns.ere").write_text("\n".join(patterns) + "\n")
        grep = ["grep", "-E", "-H", "-f", "patterns.ere", *files]
        with open(root / "grep.out", "wb") as out:  # warm the page cache, check the patterns
            warm, error = timed(grep, root, out)
        if warm.code not in (0, 1) or error:
            sys.exit(f"grep failed ({warm.code}): {error[:2000]}")
        with open(root / "grep.out", "wb") as out:
            by_grep, _ = timed(grep, root, out)
        matched = sum(1 for _ in open(root / "grep.out", "rb"))
        ingest = [sys.executable, "-m", "neuroflow_recover.cli", "-d", ".", "ingest", "--json"]
        with open(root / "ingest.out", "wb") as out:
            by_us, error = timed(ingest, root, out)
        if by_us.code != 0:
            sys.exit(f"ingest failed ({by_us.code}): {error[-3000:]}")
        print(f"grep -E -f ({len(patterns)} patterns): {by_grep.wall:.1f} s, "
              f"{size / by_grep.wall:,.0f} MB/s, {by_grep.mb:.0f} MB peak, {matched} lines")
        print(f"neuroflow-recover ingest:  {by_us.wall:.1f} s, "
              f"{size / by_us.wall:,.0f} MB/s, {by_us.mb:.0f} MB peak")
        print(f"ingest/grep throughput = {by_grep.wall / by_us.wall:.2f} (goal >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
