"""Snakemake's logs: the main-log parser, the evidence of a failed job, SLURM job logs."""
