#!/usr/bin/env python3
"""How long Snakemake needs to build the DAG and dry-run neuroflow for a large study.

Generates a sessions sheet of N sessions (default 10,000: 5,000 subjects x 2 sessions)
with empty DICOM directories (Snakemake checks that each exists; nothing reads them in a
dry run), then times `snakemake -n` of workflow/Snakefile on it and prints the figures:
wall time, CPU time, peak memory and the number of jobs. With --floor it also times the
same DAG written as static rules without neuroflow's Python (Snakemake's own cost for
those jobs and files), to separate neuroflow's overhead from Snakemake's: the floor declares
the very files neuroflow's rules declare (inputs, outputs, logs, benchmarks), since
Snakemake's cost grows with the number and length of the paths it tracks (checked job by job
on a 3-session study before the timing: `check_same_files`); a second, older
floor with the same jobs but short file names and no benchmark files is printed beside it.

With --variants it also times Snakemake options a user may pass for a big dry run (same
DAG, same jobs): ``--rerun-triggers mtime``, ``--quiet all`` and no ``--quiet`` at all.

    python benchmarks/dag_scale.py                      # 10,000 sessions
    python benchmarks/dag_scale.py --sessions 2000 --floor --variants
    python benchmarks/dag_scale.py --baseline HEAD~1 --repeat 3   # this tree vs a revision
    python benchmarks/dag_scale.py --plugin                       # the logger plugin's cost

Measured (Snakemake 9.27.1, 2 loaded cores, 10,000 sessions = 35,002 jobs): ~58 s CPU
before the scale work, ~50 s after; figures against the floor are in the README
(Benchmarks). Variants: printing every
job block (no --quiet) ~57 s, and so is --quiet all (Snakemake 9.27.1 still prints the job
blocks of a dry run); --rerun-triggers mtime ~51 s, no change. Use --quiet rules.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import measured, scratch  # noqa: E402

from neuroflow_recover.workflow.config import load_config  # noqa: E402
from neuroflow_recover.workflow.layout import Layout  # noqa: E402
from neuroflow_recover.workflow.sheet import load_sessions  # noqa: E402

SHORT_FLOOR_SNAKEFILE = """\
import csv
import gc

gc.disable()
ROWS = list(csv.DictReader(open("sessions.tsv"), delimiter="\\t"))
SUBJECT_SESSIONS = {}
for row in ROWS:
    SUBJECT_SESSIONS.setdefault(row["participant_id"], []).append(row["session_id"])
DICOM = {(r["participant_id"], r["session_id"]): r["dicom_dir"] for r in ROWS}
BIDS = ["anat/T1w.nii.gz", "anat/T1w.json", "dwi/dwi.nii.gz", "dwi/dwi.bval", "dwi/dwi.bvec", "dwi/dwi.json"]
MAPS = ["fa", "md", "mk"]

wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",

rule all:
    input: [f"r/parc/{r['participant_id']}_{r['session_id']}_{m}.tsv" for r in ROWS for m in MAPS]

rule describe:
    output: "r/bids/dataset_description.json"
    shell: "touch {output}"

rule convert:
    input: lambda wc: DICOM[(wc.subject, wc.session)]
    output: expand("r/bids/{{subject}}/{{session}}/{f}", f=BIDS)
    log: "r/logs/convert/{subject}_{session}.log"
    shell: "touch {output}"

rule prep:
    input:
        bids=lambda wc: [f"r/bids/{wc.subject}/{s}/{f}" for s in SUBJECT_SESSIONS[wc.subject] for f in BIDS],
        description="r/bids/dataset_description.json",
    output: "r/prep/{subject}.html"
    log: "r/logs/prep/{subject}.log"
    shell: "touch {output}"

rule recon:
    input: "r/prep/{subject}.html"
    output: "r/recon/{subject}_{session}_seg.nii.gz", expand("r/recon/{{subject}}_{{session}}_{m}.nii.gz", m=MAPS)
    log: "r/logs/recon/{subject}_{session}.log"
    shell: "touch {output}"

rule parc:
    input: "r/recon/{subject}_{session}_seg.nii.gz", expand("r/recon/{{subject}}_{{session}}_{m}.nii.gz", m=MAPS)
    output: expand("r/parc/{{subject}}_{{session}}_{m}.tsv", m=MAPS)
    log: "r/logs/parc/{subject}_{session}.log"
    shell: "touch {output}"
"""


def floor_snakefile(cfg: dict) -> str:
    """neuroflow's DAG as static rules: its jobs and its files, none of its Python."""
    layout = Layout.from_config(cfg)
    s, e = "{subject}", "{session}"

    def files(rule: str, *wildcards: str) -> str:
        return (f"    log: {layout.log(rule, *wildcards)!r}\n"
                f"    benchmark: {layout.benchmark(rule, *wildcards)!r}\n"
                '    shell: "touch {output}"\n')  # fmt: skip

    license = f"ancient({cfg['freesurfer_license']!r})"
    return f"""import csv
import gc

gc.disable()
ROWS = list(csv.DictReader(open("sessions.tsv"), delimiter="\\t"))
SUBJECT_SESSIONS = {{}}
for row in ROWS:
    SUBJECT_SESSIONS.setdefault(row["participant_id"], []).append(row["session_id"])
DICOM = {{(r["participant_id"], r["session_id"]): r["dicom_dir"] for r in ROWS}}
BIDS = {layout.bids_session_files(s, e)!r}
DIFFMAPS = {layout.qsiparc_diffmaps(s, e)!r}

wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",

rule all:
    input: [p.format(subject=r["participant_id"], session=r["session_id"]) for r in ROWS for p in DIFFMAPS]

rule bids_describe:
    output: {layout.dataset_description!r}
    log: {layout.describe_log!r}
    shell: "touch {{output}}"

rule heudiconv_convert:
    input: lambda wc: ancient(DICOM[(wc.subject, wc.session)]), ancient({cfg["heuristic"]!r})
    output: BIDS
{files("heudiconv_convert", s, e)}
rule qsiprep_preprocess:
    input:
        lambda wc: [p.format(subject=wc.subject, session=e) for e in SUBJECT_SESSIONS[wc.subject] for p in BIDS],
        ancient({layout.dataset_description!r}),
        {license},
    output: {layout.qsiprep_report(s)!r}
{files("qsiprep_preprocess", s)}
rule qsirecon_reconstruct:
    input: {layout.qsiprep_report(s)!r}, {license}
    output: {layout.qsirecon_dsegs(s, e) + layout.qsirecon_scalar_maps(s, e)!r}
{files("qsirecon_reconstruct", s, e)}
rule qsiparc_parcellate:
    input: {layout.qsirecon_dsegs(s, e) + layout.qsirecon_scalar_maps(s, e)!r}
    output: DIFFMAPS
{files("qsiparc_parcellate", s, e)}"""


def make_study(root: Path, sessions: int, per_subject: int) -> int:
    """sessions.tsv, empty DICOM directories, license, heuristic and config.yaml."""
    rows = ["participant_id\tsession_id\tdicom_dir"]
    subjects = -(-sessions // per_subject)
    width = max(3, len(str(subjects)))
    made = 0
    for s in range(1, subjects + 1):
        for e in range(1, per_subject + 1):
            if made == sessions:
                break
            dicom = f"dicom/sub-{s:0{width}d}/ses-{e:02d}"
            (root / dicom).mkdir(parents=True)
            rows.append(f"{s:0{width}d}\t{e:02d}\t{dicom}")
            made += 1
    (root / "sessions.tsv").write_text("\n".join(rows) + "\n")
    (root / "license.txt").write_text("benchmark\n")
    (root / "heuristic.py").write_text("")
    (root / "config.yaml").write_text(
        "sessions: sessions.tsv\nheuristic: heuristic.py\nfreesurfer_license: license.txt\n"
        "templateflow_home: null\n"
    )
    return subjects


VARIANTS = {
    "--rerun-triggers mtime": ["--quiet", "rules", "--rerun-triggers", "mtime"],
    "--quiet all": ["--quiet", "all"],
    "no --quiet (prints every job)": [],
}


def _snakemake_env(pythonpath: Path | None = None) -> dict[str, str]:
    """This environment with the venv's executables first (and `pythonpath` first on
    Python's path: a baseline revision)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _snakemake_n(
    root: Path, snakefile: Path, extra: list[str], quiet: list[str] | None
) -> list[str]:
    """`snakemake -n` of `snakefile` on `root` (``quiet`` None: ``--quiet rules``)."""
    return [
        sys.executable, "-m", "snakemake", "-n", *(["--quiet", "rules"] if quiet is None else quiet),
        "--snakefile", str(snakefile), "--directory", str(root),
        "--workflow-profile", "none", *extra,
    ]  # fmt: skip


def dry_run(
    root: Path,
    snakefile: Path,
    extra: list[str],
    quiet: list[str] | None = None,
    pythonpath: Path | None = None,
) -> dict:
    """Time one `snakemake -n` (wall, CPU and peak memory of Snakemake alone), count its jobs.

    ``quiet`` replaces the default ``--quiet rules`` (any options; [] = print everything);
    ``pythonpath`` puts another copy of the package first (a baseline revision).
    """
    cmd = _snakemake_n(root, snakefile, extra, quiet)
    with tempfile.TemporaryFile("w+") as out:
        # cwd not the repository: `python -m` puts the cwd first on sys.path
        usage = measured(
            cmd, root, env=_snakemake_env(pythonpath), stdout=out, stderr=subprocess.STDOUT
        )
        out.seek(0)
        output = out.read()
    if usage.code:
        sys.exit(f"snakemake failed ({usage.code}):\n{output[-6000:]}")
    shutil.rmtree(root / ".snakemake", ignore_errors=True)  # every run starts alike
    total = re.search(r"^total\s+(\d+)", output, re.M)
    return {
        "wall_s": usage.wall,
        "cpu_s": usage.cpu,
        "peak_mb": usage.mb,
        "jobs": int(total.group(1)) if total else -1,
    }


def baseline_tree(rev: str, into: Path) -> Path:
    """`workflow/` and `neuroflow_recover/` of git revision `rev`, extracted into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "workflow", "neuroflow_recover"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _medians(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {
        name: {key: statistics.median(r[key] for r in items) for key in ("wall_s", "cpu_s", "peak_mb")}
        for name, items in runs.items()
    }  # fmt: skip


def compare(root: Path, rev: str, repeat: int) -> None:
    """This tree and revision `rev`, alternately `repeat` times on the same study: medians
    and their ratios (this / baseline)."""
    base = baseline_tree(rev, Path(tempfile.mkdtemp(prefix="neuroflow-baseline-", dir=root)))
    extra = ["--configfile", str(root / "config.yaml")]
    runs: dict[str, list[dict]] = {"this": [], rev: []}
    for _ in range(repeat):
        runs["this"].append(dry_run(root, REPO / "workflow" / "Snakefile", extra))
        runs[rev].append(dry_run(root, base / "workflow" / "Snakefile", extra, pythonpath=base))
    medians = _medians(runs)
    for name, m in medians.items():
        jobs = {r["jobs"] for r in runs[name]}
        print(
            f"{name:>10}: median of {repeat}: {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU, "
            f"peak {m['peak_mb']:.0f} MB, jobs {sorted(jobs)}"
        )
    this, other = medians["this"], medians[rev]
    print(
        f"this/{rev}: wall {this['wall_s'] / other['wall_s']:.3f}, "
        f"CPU {this['cpu_s'] / other['cpu_s']:.3f}, peak {this['peak_mb'] / other['peak_mb']:.3f}"
    )


def plugin_overhead(root: Path, repeat: int) -> None:
    """The same dry run with and without the neuroflow logger plugin, alternately."""
    extra = ["--configfile", str(root / "config.yaml")]
    snakefile = REPO / "workflow" / "Snakefile"
    runs: dict[str, list[dict]] = {"with": [], "without": []}
    for _ in range(repeat):
        runs["without"].append(dry_run(root, snakefile, extra))
        runs["with"].append(dry_run(root, snakefile, [*extra, "--logger", "neuroflow"]))
    cpu = {name: statistics.median(r["cpu_s"] for r in items) for name, items in runs.items()}
    wall = {name: statistics.median(r["wall_s"] for r in items) for name, items in runs.items()}
    print(
        f"logger plugin: median of {repeat}: with {cpu['with']:.1f} s CPU / {wall['with']:.1f} s "
        f"wall, without {cpu['without']:.1f} s CPU / {wall['without']:.1f} s wall; "
        f"with/without CPU {cpu['with'] / cpu['without']:.3f} (target <= 1.05)"
    )


DECLARED = re.compile(r"^(?:local)?rule (\w+):$|^    (input|output|log|benchmark): (.*)$")


def declared_files(root: Path, snakefile: Path) -> list[tuple]:
    """Every job of a dry run on the study in `root` as (rule, ((field, files), ...)), sorted:
    the files each job declares, as the job blocks of `snakemake -n` print them."""
    out = subprocess.run(
        _snakemake_n(root, snakefile, ["--configfile", "config.yaml"], quiet=[]),
        cwd=root, env=_snakemake_env(), capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"snakemake failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    jobs: list[tuple[str, dict]] = []
    for line in out.stdout.splitlines():
        found = DECLARED.match(line)
        if found and found.group(1):
            jobs.append((found.group(1), {}))
        elif found and jobs:
            jobs[-1][1][found.group(2)] = tuple(sorted(found.group(3).split(", ")))
    return sorted((rule, tuple(sorted(fields.items()))) for rule, fields in jobs)


def check_same_files() -> None:
    """The floor declares the very files neuroflow's rules declare, job by job (checked on a
    study of 3 sessions before any timing); exits naming the first difference otherwise."""
    with scratch("neuroflow-floor-files-", keep=False) as root:
        make_study(root, 3, 2)
        (root / "Floor.smk").write_text(floor_snakefile(load_config(root, ["config.yaml"])))
        ours = declared_files(root, REPO / "workflow" / "Snakefile")
        floor = declared_files(root, root / "Floor.smk")
    if not any(dict(fields).get("output") for _, fields in ours):
        sys.exit("the dry run printed no job's files: Snakemake's job blocks have another form")
    if ours != floor:
        first = next(
            (a, b) for a, b in zip(ours + [None] * len(floor), floor + [None] * len(ours)) if a != b
        )
        sys.exit(
            f"the floor does not declare neuroflow's files: neuroflow {first[0]}, floor {first[1]}"
        )
    print(f"floor files: the same as neuroflow's in all {len(ours)} jobs of a 3-session study")


def floor_comparison(root: Path, first: dict, repeat: int, short: bool = True) -> None:
    """neuroflow (its first run: `first`) and the floors, alternately `repeat` times:
    medians and the ratios neuroflow/floor. `short`: also the short floor (a third more time)."""
    (root / "Floor.smk").write_text(floor_snakefile(load_config(root, ["config.yaml"])))
    runs: dict[str, list[dict]] = {"neuroflow": [first], "floor": []}
    if short:
        (root / "Short.smk").write_text(SHORT_FLOOR_SNAKEFILE)
        runs["short floor"] = []
    for index in range(repeat):
        if index:
            runs["neuroflow"].append(dry_run(
                root, REPO / "workflow" / "Snakefile", ["--configfile", str(root / "config.yaml")]
            ))  # fmt: skip
        runs["floor"].append(dry_run(root, root / "Floor.smk", []))
        if short:
            runs["short floor"].append(dry_run(root, root / "Short.smk", []))
    median = _medians(runs)
    for name, m in median.items():
        print(f"{name + ':':<12} median of {repeat}: {m['wall_s']:.1f} s wall, "
              f"{m['cpu_s']:.1f} s CPU, peak {m['peak_mb']:.0f} MB, "
              f"jobs {sorted({r['jobs'] for r in runs[name]})}")  # fmt: skip
    ours = median["neuroflow"]
    for name, note in (("floor", "goal <= 1.2"), ("short floor", "short names, no benchmarks")):
        if name not in median:
            continue
        print(f"neuroflow/{name}: CPU {ours['cpu_s'] / median[name]['cpu_s']:.2f}, "
              f"peak {ours['peak_mb'] / median[name]['peak_mb']:.2f} ({note})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--sessions-per-subject", type=int, default=2)
    parser.add_argument("--floor", action="store_true", help="also time the static-rule DAG")
    parser.add_argument(
        "--variants", action="store_true", help="also time Snakemake option variants"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated study")
    parser.add_argument(
        "--baseline", metavar="REV", help="also time git revision REV, alternately, and compare"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each, --floor/--baseline/--plugin"
    )
    parser.add_argument(
        "--plugin", action="store_true", help="also time the logger plugin's overhead"
    )
    parser.add_argument(
        "--no-short", action="store_true", help="with --floor: skip the short floor (saves a third)"
    )
    args = parser.parse_args(argv)

    if args.floor:
        check_same_files()  # before minutes of timing
    with scratch("neuroflow-dag-scale-", args.keep) as root:
        start = time.perf_counter()
        subjects = make_study(root, args.sessions, args.sessions_per_subject)
        print(f"study: {args.sessions} sessions of {subjects} subjects in {root} "
              f"({time.perf_counter() - start:.1f} s to generate)")  # fmt: skip
        start = time.perf_counter()
        load_sessions(root / "sessions.tsv")
        print(f"sheet: load_sessions() {time.perf_counter() - start:.2f} s")
        figures = dry_run(
            root, REPO / "workflow" / "Snakefile", ["--configfile", str(root / "config.yaml")]
        )
        print(
            f"neuroflow: snakemake -n  {figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU, "
            f"peak {figures['peak_mb']:.0f} MB, {figures['jobs']} jobs "
            f"({1000 * figures['wall_s'] / max(1, figures['jobs']):.2f} ms per job)"
        )
        if args.baseline:
            compare(root, args.baseline, args.repeat)
        if args.plugin:
            plugin_overhead(root, args.repeat)
        if args.variants:
            for name, options in VARIANTS.items():
                variant = dry_run(
                    root, REPO / "workflow" / "Snakefile",
                    ["--configfile", str(root / "config.yaml")], quiet=options,
                )  # fmt: skip
                print(
                    f"variant:   {name}: {variant['wall_s']:.1f} s wall, "
                    f"{variant['cpu_s']:.1f} s CPU, {variant['jobs']} jobs"
                )
        if args.floor:
            floor_comparison(root, figures, args.repeat, short=not args.no_short)
    return 0


if __name__ == "__main__":
    sys.exit(main())
