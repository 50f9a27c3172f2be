"""Configuration: merging like Snakemake, schema defaults, clear refusals, through Snakemake."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from neuroflow_recover.errors import ConfigError
from neuroflow_recover.workflow.config import (
    load_config,
    load_schema,
    merge,
    schema_path,
    stage_max_attempts,
    validate_config,
)
from workflow_study import REPO, dry_run, make_study


def write(path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def refusal(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    return str(info.value)


def test_shipped_config_equals_the_schema_defaults():
    """config/config.yaml shows every default: the two cannot drift apart."""
    shipped = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    defaults = validate_config({})
    assert shipped == defaults


def test_every_key_of_the_shipped_config_is_described_in_the_readme():
    readme = (REPO / "config" / "README.md").read_text()

    def keys(data, prefix=""):
        for key, value in data.items():
            name = f"{prefix}{key}"
            yield name
            if isinstance(value, dict) and key not in ("resources", "growth", "max", "floor"):
                yield from keys(value, name + ".")

    documented = set(re.findall(r"`([a-z_<>.]+)`", readme))
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name in keys(shipped):
        generic = re.sub(r"(stages|pipelines)\.(bids_conversion|qsiprep|qsirecon|qsiparc)", r"\1.<stage>", name)
        assert any(d in (name, generic) or d.startswith(generic + ".") for d in documented), name


def test_later_files_override_earlier_ones_mappings_merged_lists_replaced(tmp_path):
    write(tmp_path / "config" / "config.yaml", {"sessions": "a.tsv", "output_dir": "out1",
          "stages": {"qsiprep": {"output_resolution": 2.0, "extra_args": ["--x"]}}})  # fmt: skip
    first = write(tmp_path / "one.yaml", {"output_dir": "out2", "stages": {"qsiprep": {"extra_args": []}}})
    second = write(tmp_path / "sub" / "two.yaml", {"stages": {"qsiprep": {"resources": {"mem_mb": 32000}}}})
    cfg = load_config(tmp_path, [first, "sub/two.yaml"])
    assert cfg["sessions"] == "a.tsv"
    assert cfg["output_dir"] == "out2"
    qsiprep = cfg["stages"]["qsiprep"]
    assert qsiprep["output_resolution"] == 2.0
    assert qsiprep["extra_args"] == []
    # a partial resources mapping keeps the other defaults of that stage
    assert qsiprep["resources"] == {"mem_mb": 32000, "runtime": 720, "threads": 8, "disk_mb": 50000}
    assert qsiprep["container"]["runtime"] == "apptainer"
    assert cfg["stages"]["qsiparc"]["container"]["command"] == "qsiparc"


def test_default_config_file_is_optional_when_files_are_given(tmp_path):
    only = write(tmp_path / "only.yaml", {"sessions": "s.tsv"})
    assert load_config(tmp_path, [only])["sessions"] == "s.tsv"
    # the same file given twice (as config/config.yaml and --configfile) counts once
    write(tmp_path / "config" / "config.yaml", {"sessions": "t.tsv"})
    assert load_config(tmp_path, ["config/config.yaml"])["sessions"] == "t.tsv"


def test_repository_config_loads():
    cfg = load_config(REPO)
    assert cfg["sessions"] == "config/sessions.tsv"
    assert set(cfg["stages"]) == {"bids_conversion", "qsiprep", "qsirecon", "qsiparc"}


def test_merge_is_snakemake_style():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merge(base, {"a": {"c": [3]}, "d": {"e": 2}})
    assert base == {"a": {"b": 1, "c": [3]}, "d": {"e": 2}}


def test_defaults_fill_a_minimal_config_without_changing_the_input_keys():
    cfg = validate_config({"sessions": "x.tsv", "stages": {"qsirecon": {"atlases": ["A", "B"]}}})
    assert cfg["stages"]["qsirecon"]["atlases"] == ["A", "B"]
    assert cfg["stages"]["qsirecon"]["recon_spec"] == "dipy_dki"
    assert cfg["error_handling"]["pipelines"]["qsiprep"]["max_attempts"] == 3
    assert cfg["templateflow_home"] == "templateflow"
    assert validate_config({"sessions": "x", "templateflow_home": None})["templateflow_home"] is None


@pytest.mark.parametrize(
    "cfg,expected",
    [
        ({"stagez": {}}, "config: unknown key(s) 'stagez'"),
        ({"stages": {"qsiprep": {"outptu_resolution": 1}}}, "stages.qsiprep: unknown key(s) 'outptu_resolution'"),
        ({"stages": {"qsiprep": {"output_resolution": "high"}}}, "stages.qsiprep.output_resolution: 'high' is not of type number"),
        ({"stages": {"qsiprep": {"output_resolution": 0}}}, "stages.qsiprep.output_resolution: 0 is less than or equal to the minimum of 0"),
        ({"stages": {"qsiprep": {"container": {"runtime": "podman"}}}}, "stages.qsiprep.container.runtime: 'podman' is not one of apptainer, singularity, docker, none"),
        ({"stages": {"qsiprep": {"container": {"runtime": "docker", "image": ""}}}}, "stages.qsiprep.container.image: needed with runtime docker"),
        ({"stages": {"qsiparc": {"resources": {"mem_mb": 100000}}}}, "stages.qsiparc.max.mem_mb: 32000 is below resources.mem_mb (100000)"),
        ({"stages": {"qsiparc": {"resources": {"mem_mb": "4G"}}}}, "stages.qsiparc.resources.mem_mb: '4G' is not of type integer"),
        ({"stages": {"qsirecon": {"atlases": ["4S_156"]}}}, "stages.qsirecon.atlases[0]: '4S_156' has the wrong form (an atlas name, letters and digits)"),
        ({"stages": {"qsirecon": {"atlases": []}}}, "stages.qsirecon.atlases: [] should be non-empty"),
        ({"stages": {"qsirecon": {"scalar_maps": [{"workflow": "X", "file": "space-T1w_param-fa_dwimap.nii.gz"}]}}}, "stages.qsirecon.scalar_maps[0].file: 'space-T1w_param-fa_dwimap.nii.gz' has the wrong form"),
        ({"stages": {"qsiprep": {"container": {"binds": ["relative"]}}}}, "stages.qsiprep.container.binds[0]: 'relative' has the wrong form"),
        ({"error_handling": {"pipelines": {"qsiprep": {"max_attempts": 0}}}}, "error_handling.pipelines.qsiprep.max_attempts: 0 is less than the minimum of 1"),
        ({"error_handling": {"patterns": [{"id": "x", "class": "Oops"}]}}, "error_handling.patterns[0].class: 'Oops' is not one of TransientError"),
        ({"sessions": 5}, "sessions: 5 is not of type string"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(cfg, expected):
    assert expected in refusal({"sessions": "s.tsv", **cfg})


def test_several_problems_are_listed_together():
    message = refusal({"sessions": "s", "output_dir": 1, "work_dir": 2, "stagez": 3})
    assert message.startswith("invalid configuration:")
    assert "output_dir: 1 is not of type string" in message
    assert "work_dir: 2 is not of type string" in message
    assert "unknown key(s) 'stagez'" in message


def test_unreadable_config_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path, ["missing.yaml"])
    with pytest.raises(ConfigError, match="no configuration"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path, [write(tmp_path / "bad.yaml", "a: [1,\n")])
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path, [write(tmp_path / "list.yaml", "- 1\n- 2\n")])


def test_the_source_files_are_named_in_the_message(tmp_path):
    path = write(tmp_path / "c.yaml", {"sessions": "s", "output_dir": 3})
    with pytest.raises(ConfigError, match=r"invalid configuration \(.*c\.yaml\)"):
        load_config(tmp_path, [path])


def test_one_schema_file_for_snakemake_and_the_package(tmp_path):
    assert schema_path("config.schema.yaml", tmp_path) == REPO / "workflow" / "schemas" / "config.schema.yaml"
    own = tmp_path / "workflow" / "schemas"
    own.mkdir(parents=True)
    (own / "config.schema.yaml").write_text("type: object\n")
    assert schema_path("config.schema.yaml", tmp_path) == own / "config.schema.yaml"
    assert load_schema("config.schema.yaml", REPO)["title"] == "neuroflow configuration"


def test_validation_does_not_touch_values_it_does_not_fill():
    cfg = {"sessions": "s", "stages": {"qsiparc": {"extra_args": ["-v"]}}}
    before = copy.deepcopy(cfg["stages"]["qsiparc"]["extra_args"])
    assert validate_config(cfg)["stages"]["qsiparc"]["extra_args"] == before


def test_max_attempts_per_stage_with_the_default_policy_as_fallback():
    cfg = validate_config({"sessions": "s"})
    assert [stage_max_attempts(cfg, s) for s in ("bids_conversion", "qsiprep", "qsirecon", "qsiparc")] == [2, 3, 3, 3]
    cfg["error_handling"]["pipelines"]["qsiparc"] = {}
    cfg["error_handling"]["default_retry"]["max_attempts"] = 5
    assert stage_max_attempts(cfg, "qsiparc") == 5


def test_snakemake_refuses_a_bad_config_with_our_message(tmp_path):
    study = make_study(tmp_path / "study", 1, 1, config={"stages": {"qsiprep": {"output_resolution": "high"}}})
    result = dry_run(study)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ConfigError" in output
    assert "stages.qsiprep.output_resolution: 'high' is not of type number" in output
