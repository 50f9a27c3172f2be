# QSIPrep, one job per SUBJECT over all of its sessions in the sheet (one anatomical
# reference per subject). The declared output is QSIPrep's report sub-<subject>.html; the
# step runner also checks every session's preprocessed DWI.


rule qsiprep_preprocess:
    input:
        bids=subject_bids_files,
        description=ancient(LAYOUT.dataset_description),
        license=ancient(config["freesurfer_license"]),
        templateflow=ancient(TEMPLATEFLOW) if TEMPLATEFLOW else [],
    output:
        report=LAYOUT.qsiprep_report("{subject}"),
    log:
        LAYOUT.log("qsiprep_preprocess", "{subject}"),
    benchmark:
        LAYOUT.benchmark("qsiprep_preprocess", "{subject}")
    # max_attempts - 1 of the stage; 0 inside a SLURM job (slurm plugin #284, see retries())
    retries: retries("qsiprep_preprocess")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsiprep_preprocess", "threads")
    resources:
        mem_mb=resource("qsiprep_preprocess", "mem_mb"),
        runtime=resource("qsiprep_preprocess", "runtime"),
        disk_mb=resource("qsiprep_preprocess", "disk_mb"),
        attempt=attempt_number,
    params:
        work=qsiprep_work,
        step=step_runner("qsiprep_preprocess"),
        files=step_files("qsiprep_preprocess", qsiprep_expect),
        tool=qsiprep_tool,
    shell:
        "mkdir -p {params.work:q} && {params.step}"
        " --attempt {resources.attempt} {params.files}"
        " --mem-mb {resources.mem_mb} --runtime {resources.runtime}"
        " --disk-mb {resources.disk_mb} --threads {threads}"
        " -- {params.tool}"
