# QSIRecon, one job per session on the QSIPrep derivatives of its subject. Declared
# outputs: the session's atlas segmentations and scalar maps; the step runner also checks
# the atlas tables shared by all sessions.


rule qsirecon_reconstruct:
    input:
        report=LAYOUT.qsiprep_report("{subject}"),
        license=ancient(config["freesurfer_license"]),
        templateflow=ancient(TEMPLATEFLOW) if TEMPLATEFLOW else [],
        recon_spec=recon_spec_file(),
    output:
        dseg=LAYOUT.qsirecon_dsegs("{subject}", "{session}"),
        maps=LAYOUT.qsirecon_scalar_maps("{subject}", "{session}"),
    log:
        LAYOUT.log("qsirecon_reconstruct", "{subject}", "{session}"),
    benchmark:
        LAYOUT.benchmark("qsirecon_reconstruct", "{subject}", "{session}")
    retries: retries("qsirecon_reconstruct")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsirecon_reconstruct", "threads")
    resources:
        **step_resources("qsirecon_reconstruct"),
    params:
        **step_params(
            "qsirecon_reconstruct", qsirecon_tool, qsirecon_expect, qsirecon_work
        ),
    shell:
        STEP_SHELL_WITH_WORK
