"""How each stage's tool is started: the exact command line per container runtime.

``stages.<stage>.container`` chooses the runtime:

* ``apptainer`` / ``singularity``:
  ``apptainer run --containall --writable-tmpfs -B HOST:CTR[:ro] ... [--env K=V] [options] IMAGE ARGS``
* ``docker``: ``docker run --rm -v HOST:CTR[:ro] ... [-e K=V] [options] IMAGE ARGS``
* ``none``: ``[env K=V] COMMAND ARGS`` -- no mounts, the host paths are in the arguments.

Arguments that are paths are given as :class:`Mount` objects: inside a container they
become the mount point (``/data``, ``/out``, ...), with ``none`` the absolute host path.
Host paths are made absolute at run time against the workflow directory, so rule files
never hold absolute paths. ``stages.<stage>.extra_args`` are appended to the arguments.

Mount points: input data read-only at ``/data``, outputs at ``/out``, scratch at ``/work``,
the FreeSurfer license read-only at ``/opt/freesurfer/license.txt``, TemplateFlow at
``/templateflow`` (``TEMPLATEFLOW_HOME`` set), HeudiConv's heuristic read-only at
``/heuristic.py``, a recon-spec file read-only under ``/recon_spec/``, then the user's
``binds``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping, Sequence, Union

from ..errors import ConfigError
from .layout import Layout
from .sheet import Session

LICENSE_TARGET = "/opt/freesurfer/license.txt"
TEMPLATEFLOW_TARGET = "/templateflow"
HEURISTIC_TARGET = "/heuristic.py"
RECON_SPEC_DIR = "/recon_spec"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container at ``target``."""

    host: str
    target: str
    read_only: bool = False

    def host_path(self, workdir: str | os.PathLike = ".") -> str:
        return absolute(self.host, workdir)

    def spec(self, workdir: str | os.PathLike = ".") -> str:
        return f"{self.host_path(workdir)}:{self.target}" + (":ro" if self.read_only else "")

    @classmethod
    def parse(cls, bind: str) -> "Mount":
        """``HOST:CONTAINER[:ro|:rw]`` (config ``container.binds``)."""
        parts = bind.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise ConfigError(f"container bind {bind!r} must be HOST:/CONTAINER[:ro]")
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            raise ConfigError(f"container bind {bind!r}: the mode must be ro or rw")
        return cls(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro")


Arg = Union[str, Mount]


def absolute(path: str | os.PathLike, workdir: str | os.PathLike = ".") -> str:
    """``path`` made absolute against ``workdir`` (symlinks kept, no file system access)."""
    return os.path.normpath(os.path.join(os.path.abspath(workdir), os.fspath(path)))


def build_command(
    stage_cfg: Mapping[str, Any],
    args: Sequence[Arg],
    mounts: Iterable[Mount] = (),
    env: Mapping[str, Arg] | None = None,
    workdir: str | os.PathLike = ".",
) -> list[str]:
    """The argv starting one stage's tool (see the module doc for the forms)."""
    container = stage_cfg["container"]
    runtime = container["runtime"]
    inside = runtime != "none"
    all_mounts = list(mounts) + [Mount.parse(b) for b in container.get("binds") or []]

    def render(item: Arg) -> str:
        if isinstance(item, Mount):
            return item.target if inside else item.host_path(workdir)
        return str(item)

    tool_args = [render(a) for a in args] + [str(a) for a in stage_cfg.get("extra_args") or []]
    env_pairs = [f"{key}={render(value)}" for key, value in (env or {}).items()]
    options = [str(o) for o in container.get("options") or []]
    if runtime in ("apptainer", "singularity"):
        argv = [runtime, "run", "--containall", "--writable-tmpfs"]
        for mount in all_mounts:
            argv += ["-B", mount.spec(workdir)]
        for pair in env_pairs:
            argv += ["--env", pair]
        return argv + options + [_image(container, workdir, local=True)] + tool_args
    if runtime == "docker":
        argv = ["docker", "run", "--rm"]
        for mount in all_mounts:
            argv += ["-v", mount.spec(workdir)]
        for pair in env_pairs:
            argv += ["-e", pair]
        return argv + options + [_image(container, workdir, local=False)] + tool_args
    if runtime == "none":
        command = shlex.split(container.get("command") or "")
        if not command:
            raise ConfigError("container.command is empty (needed with runtime none)")
        if "/" in command[0]:
            command[0] = absolute(command[0], workdir)
        prefix = ["env", *env_pairs] if env_pairs else []
        return prefix + command + tool_args
    raise ConfigError(f"unknown container runtime {runtime!r}")


def _image(container: Mapping[str, Any], workdir, local: bool) -> str:
    image = str(container.get("image") or "")
    if not image:
        raise ConfigError(f"container.image is empty (needed with runtime {container['runtime']})")
    # apptainer/singularity: a local .sif path is made absolute; URIs (docker://...) stay
    if local and "://" not in image:
        return absolute(image, workdir)
    return image


# --- the four stages ---------------------------------------------------------------


def _license(cfg: Mapping[str, Any]) -> Mount:
    return Mount(cfg["freesurfer_license"], LICENSE_TARGET, read_only=True)


def _templateflow(cfg: Mapping[str, Any]) -> tuple[list[Mount], dict[str, Arg]]:
    home = cfg.get("templateflow_home")
    if not home:
        return [], {}
    mount = Mount(home, TEMPLATEFLOW_TARGET)
    return [mount], {"TEMPLATEFLOW_HOME": mount}


def heudiconv_command(
    cfg: Mapping[str, Any],
    session: Session,
    workdir: str | os.PathLike = ".",
    layout: Layout | None = None,
) -> list[str]:
    """HeudiConv + dcm2niix for one session, without top-level BIDS files (``-b notop``)."""
    layout = layout or Layout.from_config(cfg)  # the Snakefile passes its own, once
    dicom = Mount(session.dicom_dir, "/data", read_only=True)
    bids = Mount(layout.bids_dir, "/out")
    heuristic = Mount(cfg["heuristic"], HEURISTIC_TARGET, read_only=True)
    args: list[Arg] = [
        "--files", dicom,
        "-s", session.subject,
        "-ss", session.session,
        "-f", heuristic,
        "-c", "dcm2niix",
        "-b", "notop",
        "--minmeta",
        "-o", bids,
        "--overwrite",
    ]  # fmt: skip
    return build_command(
        cfg["stages"]["bids_conversion"], args, [dicom, bids, heuristic], workdir=workdir
    )


def qsiprep_command(
    cfg: Mapping[str, Any],
    subject: str,
    sessions: Sequence[str],
    threads: int | str,
    mem_mb: int | str,
    workdir: str | os.PathLike = ".",
    layout: Layout | None = None,
) -> list[str]:
    """QSIPrep participant level for one subject over all of its sessions."""
    layout = layout or Layout.from_config(cfg)  # the Snakefile passes its own, once
    stage = cfg["stages"]["qsiprep"]
    bids = Mount(layout.bids_dir, "/data", read_only=True)
    out = Mount(layout.qsiprep_dir, "/out")
    work = Mount(layout.work("qsiprep", subject), "/work")
    license_ = _license(cfg)
    tf_mounts, env = _templateflow(cfg)
    args: list[Arg] = [
        bids, out, "participant",
        "--participant-label", subject,
        "--session-id", *sessions,
        "--output-resolution", _number(stage["output_resolution"]),
        "--fs-license-file", license_,
        "--nprocs", str(threads),
        "--omp-nthreads", str(threads),
        "--mem", str(mem_mb),
        "-w", work,
        "--skip-bids-validation",
        "--notrack",
    ]  # fmt: skip
    return build_command(stage, args, [bids, out, work, license_, *tf_mounts], env, workdir)


def qsirecon_command(
    cfg: Mapping[str, Any],
    subject: str,
    session: str,
    threads: int | str,
    mem_mb: int | str,
    workdir: str | os.PathLike = ".",
    layout: Layout | None = None,
) -> list[str]:
    """QSIRecon for one session of the QSIPrep derivatives."""
    layout = layout or Layout.from_config(cfg)  # the Snakefile passes its own, once
    stage = cfg["stages"]["qsirecon"]
    qsiprep = Mount(layout.qsiprep_dir, "/data", read_only=True)
    out = Mount(layout.qsirecon_dir, "/out")
    work = Mount(layout.work("qsirecon", subject, session), "/work")
    license_ = _license(cfg)
    tf_mounts, env = _templateflow(cfg)
    spec: Arg = stage["recon_spec"]
    spec_mounts: list[Mount] = []
    if str(spec).endswith(SPEC_SUFFIXES):  # a recon-spec file rather than a built-in name
        spec = Mount(str(spec), f"{RECON_SPEC_DIR}/{PurePosixPath(str(spec)).name}", True)
        spec_mounts = [spec]
    args: list[Arg] = [
        qsiprep, out, "participant",
        "--participant-label", subject,
        "--session-id", session,
        "--input-type", "qsiprep",
        "--recon-spec", spec,
        "--atlases", *stage["atlases"],
        "--fs-license-file", license_,
        "--nprocs", str(threads),
        "--omp-nthreads", str(threads),
        "--mem", str(mem_mb),
        "-w", work,
        "--notrack",
    ]  # fmt: skip
    mounts = [qsiprep, out, work, license_, *tf_mounts, *spec_mounts]
    return build_command(stage, args, mounts, env, workdir)


def qsiparc_command(
    cfg: Mapping[str, Any],
    subject: str,
    session: str,
    threads: int | str,
    workdir: str | os.PathLike = ".",
    layout: Layout | None = None,
) -> list[str]:
    """QSIParc for one session: every configured atlas, outputs overwritten (``--force``)."""
    layout = layout or Layout.from_config(cfg)  # the Snakefile passes its own, once
    stage = cfg["stages"]["qsiparc"]
    qsirecon = Mount(layout.qsirecon_dir, "/data", read_only=True)
    out = Mount(layout.qsiparc_dir, "/out")
    args: list[Arg] = ["run", qsirecon, out, "-p", f"sub-{subject}", "-s", f"ses-{session}"]
    for atlas in cfg["stages"]["qsirecon"]["atlases"]:
        args += ["--atlas", atlas]
    args += ["--n-procs", str(threads), "--force"]
    return build_command(stage, args, [qsirecon, out], workdir=workdir)


def _number(value: float | int) -> str:
    """1.6 -> "1.6", 2.0 -> "2" (as a user would type it)."""
    return f"{value:g}" if isinstance(value, float) else str(value)
