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
    retries: retries("qsiprep_preprocess")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsiprep_preprocess", "threads")
    resources:
        **step_resources("qsiprep_preprocess"),
    params:
        **step_params("qsiprep_preprocess", qsiprep_tool, qsiprep_expect, qsiprep_work),
    shell:
        STEP_SHELL_WITH_WORK
