"""The workflow configuration: merged like Snakemake merges it, defaults filled, validated.

One schema, ``workflow/schemas/config.schema.yaml``, defines every key and its default. The
Snakefile validates its ``config`` with :func:`validate_config`; the recovery CLI loads the
same configuration with :func:`load_config`:

* ``config/config.yaml`` of the workflow directory first (the Snakefile's ``configfile:``),
  when it exists, then every ``--configfile`` in order; later files override earlier ones
  key by key (mappings are merged recursively, lists and scalars replaced) -- exactly
  Snakemake's ``update_config``;
* missing keys are filled from the schema's defaults (a mapping default is merged under a
  partial user mapping, so ``resources: {mem_mb: 32000}`` keeps the other defaults);
* the result is validated; the first problems are reported as :class:`ConfigError` naming
  the keys (``stages.qsiprep.output_resolution: 'high' is not a number``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import ConfigError
from ..files import regular_file_problem

DEFAULT_CONFIGFILE = "config/config.yaml"
SCHEMA_DIR = Path("workflow") / "schemas"
CONFIG_SCHEMA = "config.schema.yaml"
# the repository this package lives in (editable install): its workflow/schemas
_REPO_SCHEMA_DIR = Path(__file__).resolve().parents[2] / SCHEMA_DIR
STAGES = ("bids_conversion", "qsiprep", "qsirecon", "qsiparc")
CONTAINER_RUNTIMES = ("apptainer", "singularity", "docker")
MAX_REPORTED_ERRORS = 5
# top-level keys only a neuroflow configuration has (another workflow's config has none)
NEUROFLOW_KEYS = frozenset({"sessions", "stages", "error_handling", "heuristic"})


def schema_path(
    name: str, workdir: str | os.PathLike = ".", schema_dir: str | os.PathLike | None = None
) -> Path:
    """``schema_dir/<name>`` when given (the Snakefile passes its own), else
    ``<workdir>/workflow/schemas/<name>``, else the one of the repository of this package."""
    candidates = [Path(schema_dir)] if schema_dir else []
    candidates += [Path(workdir) / SCHEMA_DIR, _REPO_SCHEMA_DIR]
    for directory in candidates:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise ConfigError(f"schema {name} not found in {', '.join(map(str, candidates))}")


# libyaml's loader, where PyYAML has it: the schemas are read at every start of a job's own
# Snakemake, and PyYAML's Python loader takes ~60 ms for them, libyaml's ~7 ms
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCHEMAS: dict[Path, dict] = {}


def load_schema(
    name: str = CONFIG_SCHEMA,
    workdir: str | os.PathLike = ".",
    schema_dir: str | os.PathLike | None = None,
) -> dict:
    path = schema_path(name, workdir, schema_dir).resolve()
    if path not in _SCHEMAS:
        _SCHEMAS[path] = read_yaml(path, loader=FAST_LOADER)
    return _SCHEMAS[path]


MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config file is small; more is a mistake


def read_yaml(path: str | os.PathLike, loader: type = yaml.SafeLoader) -> dict:
    """A YAML mapping from a file. An empty file is refused as Snakemake refuses it (`{}` is
    a file without settings); so are a file too deeply nested to read and a huge one."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem == "no such file":
        raise ConfigError(f"config file {path} does not exist")
    if problem is not None:
        raise ConfigError(f"config file {path} cannot be read: {problem}")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:  # a regular file: its size is known
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=loader)  # safe: PyYAML's or libyaml's SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} is nested too deeply to read (beyond Python's recursion "
            "limit; a configuration needs a few levels)"
        ) from None
    if data is None:
        raise ConfigError(
            f"config file {path} is empty (no keys): Snakemake refuses it; write {{}} for a "
            "file without settings"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def merge(base: dict, override: Mapping) -> dict:
    """Snakemake's config merge: mappings recursively, everything else replaced (in place)."""
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def config_files(
    workdir: str | os.PathLike = ".", configfiles: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """The files Snakemake reads, in merge order (relative ones resolved against workdir)."""
    workdir = Path(workdir)
    files: list[Path] = []
    default = workdir / DEFAULT_CONFIGFILE
    if default.is_file():
        files.append(default)
    for name in configfiles:
        path = Path(name)
        if not path.is_absolute():
            path = workdir / path
        problem = regular_file_problem(path)
        if problem == "no such file":
            raise ConfigError(f"config file {name} does not exist (looked in {workdir})")
        if problem is not None:
            raise ConfigError(f"config file {name} cannot be read: {problem}")
        if any(os.path.samefile(path, seen) for seen in files):
            continue
        files.append(path)
    if not files:
        raise ConfigError(
            f"no configuration: {default} does not exist and no --configfile was given"
        )
    return files


def load_config(
    workdir: str | os.PathLike = ".", configfiles: Iterable[str | os.PathLike] = ()
) -> dict:
    """The merged, default-filled and validated configuration of a workflow directory."""
    files = config_files(workdir, configfiles)
    cfg: dict = {}
    source = ", ".join(str(f) for f in files)
    try:
        for path in files:
            merge(cfg, read_yaml(path))
        return validate_config(cfg, workdir, source=source)
    except RecursionError:  # deep but readable YAML: merging or validating it recursed
        raise ConfigError(f"the configuration ({source}) is nested too deeply") from None


def config_or_defaults(
    workdir: str | os.PathLike = ".", configfiles: Iterable[str | os.PathLike] = ()
) -> dict:
    """`load_config` for a neuroflow workflow directory; ``{}`` (every rule its own pipeline,
    the shipped patterns and policies) for any other Snakemake workflow: one given no config
    file whose `config/config.yaml` is absent or has none of neuroflow's own keys."""
    default = Path(workdir) / DEFAULT_CONFIGFILE
    if configfiles or (default.is_file() and NEUROFLOW_KEYS & read_yaml(default).keys()):
        return load_config(workdir, configfiles)
    return {}


def validate_config(
    cfg: dict,
    workdir: str | os.PathLike = ".",
    source: str | None = None,
    schema_dir: str | os.PathLike | None = None,
) -> dict:
    """Fill defaults into ``cfg`` (in place) and validate it; returns ``cfg``."""
    import jsonschema

    schema = load_schema(CONFIG_SCHEMA, workdir, schema_dir)
    if not isinstance(cfg, dict):
        raise ConfigError("the configuration must be a mapping of keys")
    fill_defaults(cfg, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.path])
    problems = [describe_error(e, schema) for e in errors]
    problems += semantic_problems(cfg) if not problems else []
    if problems:
        where = f" ({source})" if source else ""
        shown = problems[:MAX_REPORTED_ERRORS]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  - {p}" for p in shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise ConfigError(f"invalid configuration{where}:\n{lines}{tail}")
    return cfg


def key_path(path: Iterable[Any]) -> str:
    """``['stages', 'qsirecon', 'atlases', 0]`` -> ``stages.qsirecon.atlases[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def describe_error(error, root: dict) -> str:
    """One jsonschema error as ``key: what is wrong``."""
    where = key_path(error.absolute_path)
    value = error.instance
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("description")
    if kind == "required":
        missing = [m for m in error.validator_value if m not in (value or {})]
        keys = ", ".join(f"{where}.{m}" if error.absolute_path else m for m in missing)
        return f"{keys}: missing (required)"
    if kind in ("unevaluatedProperties", "additionalProperties"):
        allowed = sorted(_known_keys(schema, root))
        unknown = sorted(k for k in (value or {}) if k not in allowed)
        known = f" (known keys: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown key(s) {', '.join(map(repr, unknown))}{known}"
    if kind == "propertyNames":
        return f"{where}: unknown key(s); allowed: {', '.join(error.validator_value.get('enum', []))}"
    if kind == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: {value!r} is not one of {allowed}"
    if kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"{where}: {value!r} is not of type {wanted}"
    if kind == "pattern":
        return f"{where}: {value!r} has the wrong form" + (f" ({hint})" if hint else "")
    return f"{where}: {error.message}" + (f" ({hint})" if hint and kind != "minLength" else "")


def _known_keys(schema: dict, root: dict) -> set[str]:
    """Property names a mapping may have (its schema's and those of the $refs it uses)."""
    return {key for part in _schema_parts(schema, root) for key in part.get("properties", {})}


def semantic_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Rules the schema cannot say clearly."""
    problems = []
    for stage in STAGES:
        container = cfg["stages"][stage]["container"]
        if container["runtime"] in CONTAINER_RUNTIMES and not container.get("image"):
            problems.append(
                f"stages.{stage}.container.image: needed with runtime {container['runtime']}"
            )
        if container["runtime"] == "none" and not container.get("command", "").strip():
            problems.append(f"stages.{stage}.container.command: needed with runtime none")
        base = cfg["stages"][stage]["resources"]
        for key, cap in cfg["stages"][stage]["max"].items():
            if cap < base[key]:
                problems.append(
                    f"stages.{stage}.max.{key}: {cap} is below resources.{key} ({base[key]})"
                )
    return problems


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ConfigError(f"schema: only local $ref are supported, not {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def fill_defaults(instance: dict, schema: dict, root: dict) -> None:
    """Set missing keys from ``default`` (recursively, through $ref and allOf).

    A schema's own ``properties`` are visited before those of its ``$ref``/``allOf``, so a
    stage's own defaults win over the generic ones. A present mapping gets the missing keys
    of a mapping ``default`` (deep), then its own properties' defaults.
    """
    for sub in _schema_parts(schema, root):
        properties = sub.get("properties", {})
        for key, prop in properties.items():
            default = prop.get("default")
            if key not in instance:
                if "default" in prop:
                    instance[key] = copy.deepcopy(default)
                else:
                    continue
            elif isinstance(default, dict) and isinstance(instance[key], dict):
                _merge_missing(instance[key], default)
            if isinstance(instance[key], dict):
                fill_defaults(instance[key], prop, root)
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in instance.items():
                if key not in properties and isinstance(value, dict):
                    fill_defaults(value, extra, root)


def _schema_parts(schema: dict, root: dict) -> list[dict]:
    parts = [schema]
    if "$ref" in schema:
        parts += _schema_parts(_resolve(schema["$ref"], root), root)
    for sub in schema.get("allOf", []):
        parts += _schema_parts(sub, root)
    return parts


def _merge_missing(target: dict, default: Mapping) -> None:
    for key, value in default.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(target[key], dict):
            _merge_missing(target[key], value)


def stage_max_attempts(cfg: Mapping[str, Any], stage: str) -> int:
    """``error_handling.pipelines.<stage>.max_attempts``, else ``default_retry``'s."""
    section = cfg.get("error_handling") or {}
    policy = (section.get("pipelines") or {}).get(stage) or {}
    default = (section.get("default_retry") or {}).get("max_attempts", 3)
    return int(policy.get("max_attempts", default))
