"""Snakemake command lines, invocation records and the working directory's lock.

An `Invocation` is what a run was started with (config files, profile, Snakemake options):
it is stored on every dead-letter entry so `retry` re-runs with the same profile.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import NeuroflowError, SnakemakeFailed, WorkflowLocked
from .logsetup import get_logger

log = get_logger(__name__)

LOCK_DIR = Path(".snakemake") / "locks"


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


@dataclass
class SnakemakeRun:
    command: list[str]
    returncode: int
    log_path: Path | None  # from the "Complete log(s): PATH" line
    output_tail: list[str]


def run_snakemake(
    command: list[str],
    workdir: Path,
    *,
    echo=None,
    extra_env: dict[str, str] | None = None,
    stall_seconds: float | None = None,
) -> SnakemakeRun:
    """Run Snakemake in `workdir`, streaming its output to stderr; find ITS main log.

    `extra_env` is added to this process's environment for Snakemake (and its jobs).
    A SLURM run is watched (`watchdog`): stalled for `stall_seconds` (None: env
    NEUROFLOW_STALL_SECONDS, default 900; 0: not watched) -> stopped, `RunStalled` raised.
    """
    from .watchdog import Watchdog, WatchLimits, stall_seconds_from_env, stalled_error

    stall = stall_seconds_from_env() if stall_seconds is None else stall_seconds
    log.info("running snakemake", command=show_command(command), workdir=str(workdir))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra_env or {})
    try:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
        )
    except OSError as exc:
        raise SnakemakeFailed(f"cannot start Snakemake ({command[0]}): {exc}") from exc
    watchdog = Watchdog(process, WatchLimits.for_stall(stall), env) if stall > 0 else None
    log_path: Path | None = None
    tail: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if watchdog is not None:
                watchdog.feed(line)
            (echo or _to_stderr)(line)
            tail.append(line.rstrip("\n"))
            del tail[:-40]
            found = _complete_log(line)
            if found is not None:
                log_path = found
    except KeyboardInterrupt:
        # Ctrl-C reached Snakemake too (same process group): let it shut down its jobs
        log.warning("interrupted: waiting for Snakemake to stop (Ctrl-C again: terminate it)")
        _stop(process)
        raise
    returncode = process.wait()
    log.info("snakemake finished", returncode=returncode, log=str(log_path) if log_path else None)
    stalled = watchdog.finish() if watchdog is not None else None
    if stalled is not None:
        raise stalled_error(stalled, log_path)
    return SnakemakeRun(command, returncode, log_path, tail)


def _stop(process: subprocess.Popen) -> None:
    """After Ctrl-C: let Snakemake stop its jobs and release its lock; Ctrl-C again: SIGTERM."""
    try:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the signal was for us only: pass it on
            process.send_signal(signal.SIGINT)
        process.wait()
    except KeyboardInterrupt:
        process.terminate()


def _to_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def _complete_log(line: str) -> Path | None:
    marker = "Complete log(s): "
    if marker not in line:
        return None
    for item in line.split(marker, 1)[1].strip().split(", "):
        if item.endswith(".snakemake.log"):
            return Path(item)
    return None


def lock_files(workdir: Path) -> list[Path]:
    """The files in `.snakemake/locks` ([] when there is no such directory).

    Every Snakemake process creates that directory when it starts and removes it when it
    ends, so it may vanish between looking and listing: that is "no lock", not an error.
    """
    directory = Path(workdir) / LOCK_DIR
    try:
        return sorted(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def running_snakemake(workdir: Path) -> list[int]:
    """PIDs of Snakemake processes working in `workdir` (cwd or --directory)."""
    import psutil

    target = Path(workdir).resolve()
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.pid in mine:
                continue
            cmdline = process.info.get("cmdline") or []
            if not _is_snakemake(cmdline):
                continue
            where = _directory_arg(cmdline)
            cwd = Path(process.cwd())
            directory = (cwd / where).resolve() if where else cwd.resolve()
            if directory == target:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _is_snakemake(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    if Path(cmdline[0]).name == "snakemake":
        return True
    if Path(cmdline[0]).name.startswith("python"):
        rest = cmdline[1:]
        if rest[:2] == ["-m", "snakemake"]:
            return True
        if rest and Path(rest[0]).name == "snakemake":
            return True
    return False


def _directory_arg(cmdline: list[str]) -> str | None:
    for index, arg in enumerate(cmdline):
        if arg in ("-d", "--directory") and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if arg.startswith("--directory="):
            return arg.split("=", 1)[1]
    return None


def check_lock(workdir: Path, invocation: Invocation, *, unlock: bool = False) -> None:
    """Refuse to start while a running Snakemake holds the lock; handle stale locks.

    Raises WorkflowLocked (nothing changed). With `unlock`, a stale lock (no Snakemake
    process alive for the directory, e.g. after kill -9) is removed with `snakemake --unlock`.
    """
    locks = lock_files(workdir)
    if not locks:
        return
    pids = running_snakemake(workdir)
    if pids:
        raise WorkflowLocked(
            f"Snakemake is running in {workdir} (pid {', '.join(map(str, pids))}) and holds "
            "its lock: wait for it to finish, nothing was changed"
        )
    if not unlock:
        raise WorkflowLocked(
            f"{workdir} has a stale Snakemake lock ({len(locks)} file(s) in .snakemake/locks, "
            "no Snakemake process is running there, e.g. after a kill -9): run "
            f"`snakemake --unlock` in {workdir}, or pass --unlock; nothing was changed"
        )
    command = build_command(invocation) + ["--unlock"]
    log.warning("removing a stale Snakemake lock", command=show_command(command))
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, errors="replace", check=False
    )
    if result.returncode != 0 or lock_files(workdir):
        raise NeuroflowError(
            f"`{show_command(command)}` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
