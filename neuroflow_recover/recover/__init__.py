"""Recovery: invoking Snakemake, the run and retry loops, the lock and the stall watchdog."""
