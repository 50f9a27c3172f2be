"""The working directory's Snakemake lock: refuse to run while a Snakemake holds it, and
remove it only when it is provably stale.

Snakemake's lock files do not say who holds them, so every Snakemake that neuroflow starts
is recorded under `.neuroflow/holders/` (host, PID, process start time) while it runs. A
lock is stale when no Snakemake process of this host works in the directory (compared by
device and inode, so a bind mount or another path to it counts) and no recorded holder is
alive here; a holder recorded on another host, or an unknown holder on a network file
system (another login node may run it), is never judged stale: only --force-unlock removes
such a lock.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import NeuroflowError, WorkflowLocked
from ..files import on_network_filesystem
from ..logs.locations import lock_files, running_snakemake
from ..logsetup import get_logger
from ..workflow.invocation import Invocation, build_command, show_command

log = get_logger(__name__)


HOLDERS_DIR = Path(".neuroflow") / "holders"


@dataclass(frozen=True)
class Holder:
    """A Snakemake that neuroflow started in the directory."""

    host: str
    pid: int
    started: float  # the process's start time (psutil), tells a reused PID apart

    def alive_here(self) -> bool:
        import psutil

        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.Error, OSError):
            return False


@contextlib.contextmanager
def recorded_holder(workdir: Path, pid: int):
    """Record the Snakemake process `pid` as a holder of the directory while it runs."""
    import psutil

    path = Path(workdir) / HOLDERS_DIR / f"{socket.gethostname()}-{pid}.json"
    try:
        holder = Holder(socket.gethostname(), pid, psutil.Process(pid).create_time())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(holder)), encoding="utf-8")
    except (psutil.Error, OSError) as exc:  # it ended at once, or the disk is full
        log.warning("cannot record the Snakemake process as lock holder", error=str(exc))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def recorded_holders(workdir: Path) -> dict[Path, Holder]:
    found = {}
    for path in sorted((Path(workdir) / HOLDERS_DIR).glob("*.json")):
        try:
            found[path] = Holder(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
    return found


def check_lock(
    workdir: Path, invocation: Invocation, *, unlock: bool = False, force: bool = False
) -> None:
    """Refuse to start while a Snakemake holds the lock; remove a provably stale lock.

    Raises WorkflowLocked (nothing changed). With `unlock`, a stale lock is removed with
    `snakemake --unlock`; `force` removes it even when its holder may live on another host.
    """
    locks = lock_files(workdir)
    if not locks:
        return
    holders = recorded_holders(workdir)
    here = socket.gethostname()
    pids = running_snakemake(workdir)
    pids += [h.pid for h in holders.values() if h.host == here and h.alive_here() and h.pid not in pids]
    if pids:
        raise WorkflowLocked(
            f"Snakemake is running in {workdir} (pid {', '.join(map(str, pids))}) and holds "
            "its lock: wait for it to finish, nothing was changed"
        )
    if not force:
        _refuse_unprovable(workdir, holders, here)
    if not (unlock or force):
        raise WorkflowLocked(
            f"{workdir} has a stale Snakemake lock ({len(locks)} file(s) in .snakemake/locks, "
            "no Snakemake process is running there, e.g. after a kill -9): run "
            f"`snakemake --unlock` in {workdir}, or pass --unlock; nothing was changed"
        )
    _unlock(workdir, invocation)
    for path in holders:
        path.unlink(missing_ok=True)


def _refuse_unprovable(workdir: Path, holders: dict[Path, Holder], here: str) -> None:
    """WorkflowLocked when the lock's holder may be alive where we cannot look."""
    remote = [h for h in holders.values() if h.host != here]
    if remote:
        named = ", ".join(f"pid {h.pid} on host {h.host}" for h in remote)
        raise WorkflowLocked(
            f"the Snakemake lock of {workdir} was taken by a Snakemake started on another "
            f"host ({named}); this host cannot see whether it still runs: check there, and "
            "if it does not, pass --force-unlock; nothing was changed"
        )
    fstype = on_network_filesystem(workdir)
    if fstype and not holders:
        raise WorkflowLocked(
            f"{workdir} has a Snakemake lock whose holder is unknown (not started by "
            f"neuroflow-recover) and it is on a network file system ({fstype}): a Snakemake "
            "on another host may hold it; check, and if none does, pass --force-unlock; "
            "nothing was changed"
        )


def _unlock(workdir: Path, invocation: Invocation) -> None:
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
