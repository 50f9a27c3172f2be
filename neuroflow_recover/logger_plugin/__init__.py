"""The Snakemake logger plugin `neuroflow` (`--logger neuroflow`): failures queued live.

Installed as the top-level package `snakemake_logger_plugin_neuroflow` (pyproject.toml maps
it here), which is how Snakemake's plugin registry finds it; imports are absolute because
the package is loaded under both names.
"""

from neuroflow_recover.logger_plugin.handler import LogHandler, LogHandlerSettings

__all__ = ["LogHandler", "LogHandlerSettings"]
