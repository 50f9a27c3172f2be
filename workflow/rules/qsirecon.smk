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
    # max_attempts - 1 of the stage; 0 inside a SLURM job (slurm plugin #284, see retries())
    retries: retries("qsirecon_reconstruct")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsirecon_reconstruct", "threads")
    resources:
        mem_mb=resource("qsirecon_reconstruct", "mem_mb"),
        runtime=resource("qsirecon_reconstruct", "runtime"),
        disk_mb=resource("qsirecon_reconstruct", "disk_mb"),
        attempt=attempt_number,
    params:
        work=qsirecon_work,
        step=step_runner("qsirecon_reconstruct"),
        files=step_files("qsirecon_reconstruct", qsirecon_expect),
        tool=qsirecon_tool,
    shell:
        "mkdir -p {params.work:q} && {params.step}"
        " --attempt {resources.attempt} {params.files}"
        " --mem-mb {resources.mem_mb} --runtime {resources.runtime}"
        " --disk-mb {resources.disk_mb} --threads {threads}"
        " -- {params.tool}"
