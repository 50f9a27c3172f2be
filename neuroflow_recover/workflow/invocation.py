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

# options of a plain `snakemake` command line an Invocation keeps apart or drops (--logger:
# an observer of the run, not a part of what it runs)
_INVOCATION_OPTIONS = ("--configfile", "--configfiles", "--profile", "-d", "--directory", "--logger")


@dataclass
class Invocation:
    configfiles: list[str] = field(default_factory=list)
    profile: str | None = None
    snakemake_args: list[str] = field(default_factory=list)  # options only, no targets

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_snakemake_argv(cls, argv: list[str]) -> Invocation:
        """What a plain `snakemake` command line (its arguments) was started with: config
        files, profile and the other options; no targets, no --directory (retries run in
        the workflow directory)."""
        options, _targets = split_targets(list(argv))
        invocation = cls()
        index = 0
        while index < len(options):
            name, equals, value = options[index].partition("=")
            index += 1
            if name not in _INVOCATION_OPTIONS:
                invocation.snakemake_args.append(options[index - 1])
                continue
            values = [value] if equals else []
            while not equals and index < len(options) and not options[index].startswith("-"):
                values.append(options[index])
                index += 1
                if name not in ("--configfile", "--configfiles"):
                    break
            if name in ("--configfile", "--configfiles"):
                invocation.configfiles += values
            elif name == "--profile" and values:
                invocation.profile = values[0]
        return invocation

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


def build_command(
    invocation: Invocation, targets: list[str] | tuple[str, ...] = (), logger: str | None = None
) -> list[str]:
    """The Snakemake command line of `invocation` on `targets`, with the logger plugin
    `logger` when given and not already asked for."""
    command = snakemake_executable()
    if invocation.profile:
        command += ["--profile", invocation.profile]
    command += list(invocation.snakemake_args)
    if logger and "--logger" not in invocation.snakemake_args:
        command += ["--logger", logger]
    if invocation.configfiles:
        command += ["--configfile", *invocation.configfiles]
    if targets:
        command += ["--", *targets]  # `--`: targets never end up in --configfile's list
    return command


def show_command(command: list[str]) -> str:
    return shlex.join(command)
