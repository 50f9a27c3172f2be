# DICOM -> BIDS, one job per session (HeudiConv + dcm2niix, `-b notop`), and the top-level
# dataset_description.json written once by a tiny local rule.


rule bids_describe:
    output:
        description=LAYOUT.dataset_description,
    log:
        LAYOUT.describe_log,
    run:
        write_dataset_description(output.description, log[0])


rule heudiconv_convert:
    input:
        # existence is checked; their timestamps never re-run finished sessions
        dicom=dicom_dir,
        heuristic=ancient(config["heuristic"]),
    output:
        files=LAYOUT.bids_session_files("{subject}", "{session}"),
    log:
        LAYOUT.log("heudiconv_convert", "{subject}", "{session}"),
    benchmark:
        LAYOUT.benchmark("heudiconv_convert", "{subject}", "{session}")
    # max_attempts - 1 of the stage; 0 inside a SLURM job (slurm plugin #284, see retries())
    retries: retries("heudiconv_convert")
    conda:
        "../envs/tools.yaml"
    threads: resource("heudiconv_convert", "threads")
    resources:
        mem_mb=resource("heudiconv_convert", "mem_mb"),
        runtime=resource("heudiconv_convert", "runtime"),
        disk_mb=resource("heudiconv_convert", "disk_mb"),
        attempt=attempt_number,
    params:
        step=step_runner("heudiconv_convert"),
        files=step_files("heudiconv_convert"),
        tool=heudiconv_tool,
    shell:
        "{params.step}"
        " --attempt {resources.attempt} {params.files}"
        " --mem-mb {resources.mem_mb} --runtime {resources.runtime}"
        " --disk-mb {resources.disk_mb} --threads {threads}"
        " -- {params.tool}"
