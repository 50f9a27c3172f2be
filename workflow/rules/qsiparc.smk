# QSIParc, one job per session: every scalar map parcellated with every atlas. The declared
# outputs are the *_diffmap.tsv files QSIParc writes (a per-map failure is only a warning
# with exit code 0, so the step runner checks them).


rule qsiparc_parcellate:
    input:
        dseg=LAYOUT.qsirecon_dsegs("{subject}", "{session}"),
        maps=LAYOUT.qsirecon_scalar_maps("{subject}", "{session}"),
    output:
        diffmaps=LAYOUT.qsiparc_diffmaps("{subject}", "{session}"),
    log:
        LAYOUT.log("qsiparc_parcellate", "{subject}", "{session}"),
    benchmark:
        LAYOUT.benchmark("qsiparc_parcellate", "{subject}", "{session}")
    # max_attempts - 1 of the stage; 0 inside a SLURM job (slurm plugin #284, see retries())
    retries: retries("qsiparc_parcellate")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsiparc_parcellate", "threads")
    resources:
        mem_mb=resource("qsiparc_parcellate", "mem_mb"),
        runtime=resource("qsiparc_parcellate", "runtime"),
        disk_mb=resource("qsiparc_parcellate", "disk_mb"),
        attempt=attempt_number,
    params:
        step=step_runner("qsiparc_parcellate"),
        files=step_files("qsiparc_parcellate"),
        tool=qsiparc_tool,
    shell:
        "{params.step}"
        " --attempt {resources.attempt} {params.files}"
        " --mem-mb {resources.mem_mb} --runtime {resources.runtime}"
        " --disk-mb {resources.disk_mb} --threads {threads}"
        " -- {params.tool}"
