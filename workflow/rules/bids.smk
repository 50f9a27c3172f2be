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
    retries: retries("heudiconv_convert")
    conda:
        "../envs/tools.yaml"
    threads: resource("heudiconv_convert", "threads")
    resources:
        **step_resources("heudiconv_convert"),
    params:
        **step_params("heudiconv_convert", heudiconv_tool),
    shell:
        STEP_SHELL
