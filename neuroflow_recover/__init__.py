"""neuroflow-recover: classify failed Snakemake jobs, keep a dead-letter queue, retry exactly."""

__version__ = "0.1.0"
