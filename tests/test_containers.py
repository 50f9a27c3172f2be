"""The exact command line of every stage's tool, per container runtime."""

from __future__ import annotations

import pytest

from neuroflow_recover.errors import ConfigError
from neuroflow_recover.workflow.config import validate_config
from neuroflow_recover.workflow.containers import (
    Mount,
    build_command,
    heudiconv_command,
    qsiparc_command,
    qsiprep_command,
    qsirecon_command,
)
from neuroflow_recover.workflow.sheet import Session

WD = "/study"  # the workflow directory the relative paths are made absolute against


def config(runtime: str, **top) -> dict:
    container = {"runtime": runtime, "image": "containers/app.sif" if runtime != "docker" else "pennlinc/app:1.0"}
    cfg = {
        "sessions": "sessions.tsv",
        "templateflow_home": None,
        "stages": {stage: {"container": dict(container)} for stage in ("bids_conversion", "qsiprep", "qsirecon", "qsiparc")},
    }
    cfg.update(top)
    return validate_config(cfg)


QSIPREP_ARGS = [
    "/data", "/out", "participant", "--participant-label", "01", "--session-id", "01", "02",
    "--output-resolution", "1.6", "--fs-license-file", "/opt/freesurfer/license.txt",
    "--nprocs", "8", "--omp-nthreads", "8", "--mem", "32000", "-w", "/work",
    "--skip-bids-validation", "--notrack",
]  # fmt: skip


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_qsiprep_apptainer_and_singularity(runtime):
    argv = qsiprep_command(config(runtime), "01", ["01", "02"], 8, 32000, workdir=WD)
    assert argv == [
        runtime, "run", "--containall", "--writable-tmpfs",
        "-B", "/study/results/bids:/data:ro",
        "-B", "/study/results/derivatives/qsiprep:/out",
        "-B", "/study/work/qsiprep/sub-01:/work",
        "-B", "/study/license.txt:/opt/freesurfer/license.txt:ro",
        "/study/containers/app.sif",
        *QSIPREP_ARGS,
    ]  # fmt: skip


def test_qsiprep_apptainer_with_templateflow_binds_and_options():
    cfg = config("apptainer", templateflow_home="tf", freesurfer_license="/licenses/fs.txt")
    cfg["stages"]["qsiprep"]["container"]["binds"] = ["/scratch/fs:/fs:ro"]
    cfg["stages"]["qsiprep"]["container"]["options"] = ["--nv", "--cleanenv"]
    cfg["stages"]["qsiprep"]["container"]["image"] = "docker://pennlinc/qsiprep:1.0.1"
    cfg["stages"]["qsiprep"]["extra_args"] = ["--denoise-method", "patch2self"]
    argv = qsiprep_command(cfg, "01", ["01", "02"], 8, 32000, workdir=WD)
    assert argv == [
        "apptainer", "run", "--containall", "--writable-tmpfs",
        "-B", "/study/results/bids:/data:ro",
        "-B", "/study/results/derivatives/qsiprep:/out",
        "-B", "/study/work/qsiprep/sub-01:/work",
        "-B", "/licenses/fs.txt:/opt/freesurfer/license.txt:ro",
        "-B", "/study/tf:/templateflow",
        "-B", "/scratch/fs:/fs:ro",
        "--env", "TEMPLATEFLOW_HOME=/templateflow",
        "--nv", "--cleanenv",
        "docker://pennlinc/qsiprep:1.0.1",
        *QSIPREP_ARGS, "--denoise-method", "patch2self",
    ]  # fmt: skip


def test_qsiprep_docker():
    argv = qsiprep_command(config("docker", templateflow_home="tf"), "01", ["01", "02"], 8, 32000, workdir=WD)
    assert argv == [
        "docker", "run", "--rm",
        "-v", "/study/results/bids:/data:ro",
        "-v", "/study/results/derivatives/qsiprep:/out",
        "-v", "/study/work/qsiprep/sub-01:/work",
        "-v", "/study/license.txt:/opt/freesurfer/license.txt:ro",
        "-v", "/study/tf:/templateflow",
        "-e", "TEMPLATEFLOW_HOME=/templateflow",
        "pennlinc/app:1.0",
        *QSIPREP_ARGS,
    ]  # fmt: skip


def test_qsiprep_without_container_uses_host_paths():
    cfg = config("none", templateflow_home="tf")
    cfg["stages"]["qsiprep"]["container"]["command"] = "qsiprep"
    argv = qsiprep_command(cfg, "01", ["01"], 2, 4000, workdir=WD)
    assert argv == [
        "env", "TEMPLATEFLOW_HOME=/study/tf",
        "qsiprep", "/study/results/bids", "/study/results/derivatives/qsiprep", "participant",
        "--participant-label", "01", "--session-id", "01", "--output-resolution", "1.6",
        "--fs-license-file", "/study/license.txt", "--nprocs", "2", "--omp-nthreads", "2",
        "--mem", "4000", "-w", "/study/work/qsiprep/sub-01", "--skip-bids-validation", "--notrack",
    ]  # fmt: skip


def test_qsirecon_apptainer_with_a_recon_spec_file():
    cfg = config("apptainer")
    cfg["stages"]["qsirecon"]["recon_spec"] = "specs/my_spec.yaml"
    cfg["stages"]["qsirecon"]["atlases"] = ["4S156Parcels", "AAL116"]
    argv = qsirecon_command(cfg, "01", "02", 4, 16000, workdir=WD)
    assert argv == [
        "apptainer", "run", "--containall", "--writable-tmpfs",
        "-B", "/study/results/derivatives/qsiprep:/data:ro",
        "-B", "/study/results/derivatives/qsirecon:/out",
        "-B", "/study/work/qsirecon/sub-01_ses-02:/work",
        "-B", "/study/license.txt:/opt/freesurfer/license.txt:ro",
        "-B", "/study/specs/my_spec.yaml:/recon_spec/my_spec.yaml:ro",
        "/study/containers/app.sif",
        "/data", "/out", "participant", "--participant-label", "01", "--session-id", "02",
        "--input-type", "qsiprep", "--recon-spec", "/recon_spec/my_spec.yaml",
        "--atlases", "4S156Parcels", "AAL116",
        "--fs-license-file", "/opt/freesurfer/license.txt",
        "--nprocs", "4", "--omp-nthreads", "4", "--mem", "16000", "-w", "/work", "--notrack",
    ]  # fmt: skip


def test_qsirecon_docker_with_a_builtin_spec():
    argv = qsirecon_command(config("docker"), "01", "02", 4, 16000, workdir=WD)
    assert argv[:12] == [
        "docker", "run", "--rm",
        "-v", "/study/results/derivatives/qsiprep:/data:ro",
        "-v", "/study/results/derivatives/qsirecon:/out",
        "-v", "/study/work/qsirecon/sub-01_ses-02:/work",
        "-v", "/study/license.txt:/opt/freesurfer/license.txt:ro",
        "pennlinc/app:1.0",
    ]  # fmt: skip
    assert argv[argv.index("--recon-spec") + 1] == "dipy_dki"


def test_qsirecon_without_container():
    cfg = config("none")
    cfg["stages"]["qsirecon"]["container"]["command"] = "tools/qsirecon_standin.py --quiet"
    argv = qsirecon_command(cfg, "01", "02", 1, 1000, workdir=WD)
    assert argv[:5] == [
        "/study/tools/qsirecon_standin.py", "--quiet",
        "/study/results/derivatives/qsiprep", "/study/results/derivatives/qsirecon", "participant",
    ]  # fmt: skip
    assert argv[argv.index("-w") + 1] == "/study/work/qsirecon/sub-01_ses-02"
    assert argv[argv.index("--fs-license-file") + 1] == "/study/license.txt"


def test_heudiconv_per_runtime():
    session = Session("01", "02", "dicom/sub-01/ses-02", 3)
    common = ["-s", "01", "-ss", "02"]
    tail = ["-c", "dcm2niix", "-b", "notop", "--minmeta"]
    none = config("none")
    none["stages"]["bids_conversion"]["container"]["command"] = "heudiconv"
    assert heudiconv_command(none, session, workdir=WD) == [
        "heudiconv", "--files", "/study/dicom/sub-01/ses-02", *common,
        "-f", "/study/config/heuristic.py", *tail, "-o", "/study/results/bids", "--overwrite",
    ]  # fmt: skip
    assert heudiconv_command(config("singularity"), session, workdir=WD) == [
        "singularity", "run", "--containall", "--writable-tmpfs",
        "-B", "/study/dicom/sub-01/ses-02:/data:ro",
        "-B", "/study/results/bids:/out",
        "-B", "/study/config/heuristic.py:/heuristic.py:ro",
        "/study/containers/app.sif",
        "--files", "/data", *common, "-f", "/heuristic.py", *tail, "-o", "/out", "--overwrite",
    ]  # fmt: skip
    assert heudiconv_command(config("docker"), session, workdir=WD)[:9] == [
        "docker", "run", "--rm",
        "-v", "/study/dicom/sub-01/ses-02:/data:ro",
        "-v", "/study/results/bids:/out",
        "-v", "/study/config/heuristic.py:/heuristic.py:ro",
    ]  # fmt: skip


def test_qsiparc_per_runtime():
    cfg = config("none")
    cfg["stages"]["qsiparc"]["container"]["command"] = "qsiparc"
    cfg["stages"]["qsirecon"]["atlases"] = ["4S156Parcels", "AAL116"]
    assert qsiparc_command(cfg, "01", "02", 2, workdir=WD) == [
        "qsiparc", "run", "/study/results/derivatives/qsirecon", "/study/results/derivatives/qsiparc",
        "-p", "sub-01", "-s", "ses-02", "--atlas", "4S156Parcels", "--atlas", "AAL116",
        "--n-procs", "2", "--force",
    ]  # fmt: skip
    assert qsiparc_command(config("apptainer"), "01", "02", 1, workdir=WD) == [
        "apptainer", "run", "--containall", "--writable-tmpfs",
        "-B", "/study/results/derivatives/qsirecon:/data:ro",
        "-B", "/study/results/derivatives/qsiparc:/out",
        "/study/containers/app.sif",
        "run", "/data", "/out", "-p", "sub-01", "-s", "ses-02", "--atlas", "4S156Parcels",
        "--n-procs", "1", "--force",
    ]  # fmt: skip


def test_relative_output_and_work_dirs_follow_the_config():
    cfg = config("apptainer", output_dir="/scratch/out", work_dir="../tmp")
    argv = qsiprep_command(cfg, "A7", ["pre"], 1, 1000, workdir=WD)
    assert "/scratch/out/bids:/data:ro" in argv
    assert "/tmp/qsiprep/sub-A7:/work" in argv


def test_build_command_renders_mounts_in_arguments_and_environment():
    stage = {"container": {"runtime": "none", "command": "tool"}, "extra_args": ["--x"]}
    data = Mount("in", "/data", read_only=True)
    assert build_command(stage, ["a", data], [data], {"HOME_DIR": data}, workdir="/w") == [
        "env", "HOME_DIR=/w/in", "tool", "a", "/w/in", "--x",
    ]  # fmt: skip
    stage = {"container": {"runtime": "docker", "image": "img"}}
    assert build_command(stage, [data], [data], {"K": "v"}, workdir="/w") == [
        "docker", "run", "--rm", "-v", "/w/in:/data:ro", "-e", "K=v", "img", "/data",
    ]  # fmt: skip


@pytest.mark.parametrize("bind", ["nocolon", "host:relative", "host:/c:rx", ":/c"])
def test_bad_binds_are_refused(bind):
    with pytest.raises(ConfigError, match="bind"):
        Mount.parse(bind)


def test_mount_parse():
    assert Mount.parse("/a:/b:ro") == Mount("/a", "/b", True)
    assert Mount.parse("a:/b") == Mount("a", "/b", False)
    assert Mount.parse("a:/b:rw").spec("/w") == "/w/a:/b"


def test_missing_image_or_command_is_refused():
    with pytest.raises(ConfigError, match="image"):
        build_command({"container": {"runtime": "apptainer", "image": ""}}, [])
    with pytest.raises(ConfigError, match="command"):
        build_command({"container": {"runtime": "none", "command": " "}}, [])
