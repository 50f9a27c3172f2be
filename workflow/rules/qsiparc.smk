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
    retries: retries("qsiparc_parcellate")
    conda:
        "../envs/tools.yaml"
    threads: resource("qsiparc_parcellate", "threads")
    resources:
        **step_resources("qsiparc_parcellate"),
    params:
        **step_params("qsiparc_parcellate", qsiparc_tool),
    shell:
        STEP_SHELL
