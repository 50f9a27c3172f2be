"""Speed-ups of Snakemake's DAG building for studies of many sessions, each with its measure.

Measured with `benchmarks/dag_scale.py` (Snakemake 9.27.1, 10,000 sessions = 35,002 jobs, 2
loaded cores). Each uses at most one Snakemake internal and degrades to "no speed-up" (same
DAG, same commands) when a newer Snakemake lacks it.
"""

from __future__ import annotations

import gc
import inspect

try:  # internals of the pinned Snakemake (snakemake.common); only a speed-up
    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, overwrite_function_params
except ImportError:  # pragma: no cover - a newer Snakemake: same results, slower DAG
    FUNC_OVERWRITE_PARAMS_ATTR = None

    def overwrite_function_params(func, params):
        pass


def pause_garbage_collector() -> None:
    """Python's cyclic collector costs time in proportion to the live objects, and the DAG
    of 10,000 sessions is millions of them: off while the DAG is built (~100 s -> ~55 s)."""
    gc.disable()


def resume_garbage_collector() -> None:
    """Back on once the run starts (`onstart`), with the DAG frozen out of its scans."""
    gc.freeze()
    gc.enable()


def declare_params(func):
    """Hand Snakemake a callable's parameters once: it inspects the signature of every
    input/params/resources callable for every job otherwise (~3 % of a dry run)."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


def declare_resource_evaluate() -> None:
    """Snakemake 9 evaluates every callable resource through its own Resource.evaluate and
    looks up that method's signature twice per resource of every job (six resources a job:
    ~10 % of a dry run). Handed over once: the same parameters, minus `self`."""
    from snakemake.resources import Resource

    if FUNC_OVERWRITE_PARAMS_ATTR and not hasattr(Resource.evaluate, FUNC_OVERWRITE_PARAMS_ATTR):
        _self, *params = inspect.signature(Resource.evaluate).parameters.values()
        overwrite_function_params(Resource.evaluate, inspect.Signature(params).parameters)
