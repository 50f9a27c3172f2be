"""How Snakemake is invoked: what a run was started with, and its command line.

An `Invocation` (config files, profile, Snakemake options) is stored on every dead-letter
entry so `retry` re-runs with the same profile.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Invocation:
    configfiles: list[str] = field(default_factory=list)
    profile: str | None = None
    snakemake_args: list[str] = field(default_factory=list)  # options only, no targets

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Invocation:
        data = data or {}
        return cls(
            configfiles=list(data.get("configfiles") or []),
            profile=data.get("profile"),
            snakemake_args=list(data.get("snakemake_args") or []),
        )


def split_targets(args: list[str]) -> tuple[list[str], list[str]]:
    """Split pass-through Snakemake arguments into (options, targets) with Snakemake's parser."""
    if not args:
        return [], []
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    try:
        parsed, _unknown = parser.parse_known_intermixed_args(list(args))
    except (SystemExit, Exception):  # argparse exits on errors; Snakemake will say why
        return list(args), []
    targets = [str(t) for t in (parsed.targets or [])]
    options = list(args)
    for target in targets:
        for index in range(len(options) - 1, -1, -1):
            if options[index] == target:
                del options[index]
                break
    if "--" in options and options[-1] == "--":
        options.pop()
    return options, targets


def from_command_line(command: str | None, local: bool) -> Invocation:
    """The invocation of a run of another Snakemake workflow, from the command line its log
    shows (its options, without the targets); without one, a local run on every core."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        words = []
    options, _targets = split_targets(words[1:])
    if not options and local:
        options = ["--cores", "all"]
    return Invocation(snakemake_args=options)


def snakemake_executable() -> list[str]:
    """The `snakemake` of the Python running us (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "snakemake"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("snakemake")
    if found:
        return [found]
    return [sys.executable, "-m", "snakemake"]


def build_command(invocation: Invocation, targets: list[str] | tuple[str, ...] = ()) -> list[str]:
    command = snakemake_executable()
    if invocation.profile:
        command += ["--profile", invocation.profile]
    command += list(invocation.snakemake_args)
    if invocation.configfiles:
        command += ["--configfile", *invocation.configfiles]
    if targets:
        command += ["--", *targets]  # `--`: targets never end up in --configfile's list
    return command


def show_command(command: list[str]) -> str:
    return shlex.join(command)
