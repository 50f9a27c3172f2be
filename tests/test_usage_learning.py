"""What attempts use, what the history learns, what billing gives free (issue 13).

Real processes are measured (a child that touches 120 MB), real SLURM output is parsed
(`tests/fixtures/slurm_billing/`: `scontrol show partition` and `show config` of the local
test cluster with its billing weights, `sacct` of jobs of the SLURM suite), real files and
processes write the usage summary. No wall-clock bounds.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from neuroflow_recover import environment
from neuroflow_recover.step.accounting import (
    parse_duration_s,
    parse_mem_mb,
    parse_sacct,
    sacct_jobs,
)
from neuroflow_recover.step.attempts import AttemptRecord, write_record
from neuroflow_recover.step.billing import (
    BillingModel,
    billing_model,
    model_from_scontrol,
    parse_config,
    parse_pairs,
    parse_weights,
)
from neuroflow_recover.step.learning import (
    LearnSettings,
    Sample,
    add_sample,
    learned_request,
    quantile,
    read_samples,
    sample_of,
    summary_path,
)
from neuroflow_recover.step.resource_plan import (
    ResourcePlan,
    make_plan,
    resource_plan,
    within_billing,
)
from neuroflow_recover.step.resources import stage_resources
from neuroflow_recover.step.usage import TreeMeter
from neuroflow_recover.step.workdir import prepare
from neuroflow_recover.workflow.config import load_config

FIXTURES = REPO / "tests" / "fixtures" / "slurm_billing"
CFG = load_config(REPO, ())


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


# --------------------------------------------------------------------------- measuring


def test_the_tree_meter_sees_a_child_that_holds_memory_and_spends_cpu():
    code = (
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-c', "
        "'b = bytearray(120 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); "
        "import sys; sys.stdin.read(); s = sum(range(3_000_000))'], input=b'')"
    )
    meter = TreeMeter(interval=0.0)
    proc = subprocess.Popen([sys.executable, "-c", code])
    while proc.poll() is None:
        meter.sample(proc.pid, force=True)
    usage = meter.finish()
    # the grandchild held 120 MB: seen by a sample of the tree or by the reaped rusage
    assert usage.peak_mem_mb >= 120
    assert usage.cpu_s > 0 and usage.elapsed_s > 0 and usage.source == "process-tree"
    assert usage.cpu_efficiency(1) == pytest.approx(usage.cpu_s / usage.elapsed_s)


# --------------------------------------------------------------------------- SLURM output


def test_sacct_units_and_durations():
    assert parse_mem_mb("810624K") == 792
    assert parse_mem_mb("1G") == 1024 and parse_mem_mb("1000M") == 1000
    assert parse_mem_mb("1000Mc", cpus=4) == 4000 and parse_mem_mb("1200Mn") == 1200
    assert parse_mem_mb("") is None and parse_mem_mb("UNLIMITED") is None
    assert parse_duration_s("00:01:20") == 80 and parse_duration_s("00:05.443") == 5.443
    assert parse_duration_s("1-02:03:04") == 93784 and parse_duration_s("UNLIMITED") is None


def test_sacct_of_the_slurm_suite_jobs_gives_the_steps_peak_and_the_billing():
    jobs = parse_sacct(text("sacct_workflow.txt"))
    timeout, killed, learned = jobs["50"], jobs["52"], jobs["60"]
    assert (timeout.state, timeout.timelimit_min, timeout.elapsed_s) == ("TIMEOUT", 1, 80)
    assert timeout.max_rss_mb == 248  # the larger step (50.0: 254264K)
    assert (killed.state, killed.req_mem_mb, killed.max_rss_mb) == ("FAILED", 400, 771)
    assert jobs["54"].req_mem_mb == 1024 and jobs["54"].billing == 1.0
    assert (learned.req_mem_mb, learned.cpu_s, learned.alloc_cpus) == (1000, 5.626, 1)
    plain = parse_sacct(text("sacct.txt"))
    assert plain["35"].max_rss_mb == 315 and plain["36"].billing == 1.0


def test_no_sacct_means_no_accounting_not_an_error():
    def missing(*args, **kwargs):
        raise FileNotFoundError("sacct")

    assert sacct_jobs(["1", "2"], run=missing) == {}
    failed = subprocess.CompletedProcess([], 1, "", "Slurm accounting storage is disabled")
    assert sacct_jobs(["1"], run=lambda *a, **k: failed) == {}


# --------------------------------------------------------------------------- billing


def test_the_test_clusters_billing_is_max_tres_with_1_gb_free_per_cpu():
    partition = parse_pairs(text("partition_max_tres.txt"))
    config = parse_config(text("config_max_tres.txt"))
    assert partition["TRESBillingWeights"] == "CPU=1.0,Mem=1.0G"
    model = model_from_scontrol(partition, config)
    assert (model.model, model.mem_per_cpu_mb, model.max_time_min) == ("max_tres", 1024, None)
    assert model.free_mem_mb(8) == 8192
    # priority/basic does not print PriorityFlags: the partition's own billing tells
    without_flags = {k: v for k, v in config.items() if k != "PriorityFlags"}
    assert model_from_scontrol(partition, without_flags).model == "max_tres"


def test_other_billing_models_do_not_give_memory_away():
    partition = parse_pairs(text("partition_max_tres.txt"))
    config = parse_config(text("config_max_tres.txt"))
    summed = {**config, "PriorityFlags": ""}
    assert model_from_scontrol(partition, summed).model == "sum"
    assert model_from_scontrol(partition, summed).free_mem_mb(8) is None
    # no weights: SLURM bills CPUs; DefMemPerCPU (1000 in the config) is the fair share
    unweighted = {k: v for k, v in partition.items() if k != "TRESBillingWeights"}
    cpus = model_from_scontrol(unweighted, config)
    assert (cpus.model, cpus.free_mem_mb(4)) == ("cpus", 4000)
    limited = model_from_scontrol({**partition, "MaxTime": "2-00:00:00"}, config)
    assert limited.max_time_min == 2880
    assert parse_weights("CPU=2.0,Mem=0.25G,GRES/gpu=4") == {"cpu": 2.0, "mem": 0.25 / 1024, "gres/gpu": 4.0}


def test_billing_from_the_config_and_none_outside_slurm():
    cfg = {"billing": {"model": "max_tres", "mem_per_cpu_mb": 4000, "raise_memory": "first_attempt"}}
    model = billing_model(cfg, on_slurm=False)
    assert (model.model, model.free_mem_mb(8), model.raises(1)) == ("max_tres", 32000, True)
    assert billing_model({"billing": {"model": "auto"}}, on_slurm=False).model == "none"
    retries = BillingModel("max_tres", 4000, raise_memory="retries")
    assert not retries.raises(1) and retries.raises(2)
    assert not BillingModel("max_tres", 4000, raise_memory="never").raises(2)


def test_within_billing_raises_to_the_free_share_never_above_the_cap_and_caps_runtime():
    model = BillingModel("max_tres", 4000, max_time_min=1440, raise_memory="retries")
    res = {"mem_mb": 16000, "runtime": 2000, "threads": 8, "disk_mb": 1}
    assert within_billing(res, 2, {"mem_mb": 64000}, model)["mem_mb"] == 32000
    assert within_billing(res, 2, {"mem_mb": 24000}, model)["mem_mb"] == 24000
    assert within_billing(res, 1, {"mem_mb": 64000}, model)["mem_mb"] == 16000
    assert within_billing({**res, "mem_mb": 40000}, 2, {}, model)["mem_mb"] == 40000
    assert within_billing(res, 1, {}, model)["runtime"] == 1440


# --------------------------------------------------------------------------- learning


def test_quantile_interpolates_like_numpy():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10], 0.95) == 10
    assert quantile(list(range(101)), 0.9) == pytest.approx(90)


def samples(peaks, runtime=30.0, threads=8):
    return [Sample(p, runtime, threads) for p in peaks]


def test_learned_request_needs_history_and_stays_within_floor_and_cap():
    settings = LearnSettings(min_history=5, mem_quantile=0.9, mem_margin=0.1,
                             runtime_quantile=1.0, runtime_margin=0.5)  # fmt: skip
    floor, cap = {"mem_mb": 8000, "runtime": 120}, {"mem_mb": 64000, "runtime": 2880}
    history = samples([10000, 11000, 12000, 13000, 20000], runtime=300)
    assert learned_request(history[:4], settings, 8, floor, cap) is None
    got = learned_request(history, settings, 8, floor, cap)
    assert got == {"mem_mb": 18920, "runtime": 450}  # p90 17200 x 1.1; max 300 x 1.5
    assert learned_request(samples([1000] * 5), settings, 8, floor, cap)["mem_mb"] == 8000
    assert learned_request(samples([90000] * 5), settings, 8, floor, cap)["mem_mb"] == 64000
    # only samples taken with the stage's threads count
    assert learned_request(history, settings, 16, floor, cap) is None
    off = LearnSettings(enabled=False, min_history=1)
    assert learned_request(history, off, 8, floor, cap) is None


def record(attempt, started, **fields) -> AttemptRecord:
    base = dict(rule="qsiprep_preprocess", stage="qsiprep", wildcards={"subject": "01"},
                attempt=attempt, started_at=started, ended_at=started, exit_code=0,
                error_class=None, retryable=None, resource=None, pattern_id=None, evidence=None,
                resources={"mem_mb": 1000, "runtime": 10, "threads": 2, "disk_mb": 1})  # fmt: skip
    return AttemptRecord(**{**base, **fields})


def test_a_resumed_success_counts_the_runs_it_resumed():
    first = record(1, "2026-01-01T00:00:00+00:00", error_class="ResourceError", resource="runtime",
                   peak_mem_mb=900, elapsed_s=600.0)  # fmt: skip
    second = record(2, "2026-01-01T01:00:00+00:00", peak_mem_mb=700, elapsed_s=300.0, resumed=True)
    fresh = record(2, "2026-01-01T01:00:00+00:00", peak_mem_mb=700, elapsed_s=300.0)
    assert sample_of(second, [first, second]) == Sample(
        900, 15.0, 2, "qsiprep_preprocess/subject-01", second.ended_at)
    assert sample_of(fresh, [first, fresh]).runtime_min == 5.0
    assert sample_of(record(1, "2026-01-01T00:00:00+00:00"), []) is None  # not measured


def _add_many(root: str, start: int) -> None:
    for n in range(start, start + 25):
        add_sample(root, "qsirecon", Sample(n, 1.0, 1, f"job{n}", ""))


def test_the_summary_keeps_every_sample_of_concurrent_writers_and_a_window(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), start)) for start in (0, 100, 200, 300)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    got = read_samples(tmp_path, "qsirecon")
    assert sorted(s.peak_mem_mb for s in got) == sorted(
        n for start in (0, 100, 200, 300) for n in range(start, start + 25))
    add_sample(tmp_path, "qsirecon", Sample(999, 1.0, 1), window=10)
    assert [s.peak_mem_mb for s in read_samples(tmp_path, "qsirecon")][-1] == 999
    assert len(read_samples(tmp_path, "qsirecon")) == 10
    summary_path(tmp_path, "qsirecon").write_text("not json")
    assert read_samples(tmp_path, "qsirecon") == []  # unreadable: learn from nothing


# --------------------------------------------------------------------------- the plan


def study_config(**learn) -> dict:
    cfg = json.loads(json.dumps(CFG))
    cfg["stages"]["qsirecon"]["learn"].update({"min_history": 3, **learn})
    return cfg


def test_the_plan_learns_once_enough_history_exists_and_retries_grow_from_it(tmp_path):
    cfg = study_config()
    for peak in (10000, 11000, 12000):
        add_sample(tmp_path, "qsirecon", Sample(peak, 100.0, 8))
    plan = make_plan(cfg, tmp_path, BillingModel("max_tres", 4000, raise_memory="retries"))
    assert plan.samples == {"bids_conversion": 0, "qsiparc": 0, "qsiprep": 0, "qsirecon": 3}
    first = plan.first["qsirecon"]
    assert first["mem_mb"] == round(quantile([10000, 11000, 12000], 0.9) * 1.1 + 0.5)
    assert first["runtime"] == 150 and first["threads"] == 8  # p99 100 x 1.5
    assert plan.first["qsiprep"] == cfg["stages"]["qsiprep"]["resources"]  # 0 samples
    wc = {"subject": "01", "session": "01"}
    assert stage_resources(cfg, "qsirecon_reconstruct", wc, 1, tmp_path, plan=plan) == first
    # attempt 2 without records: unknown cause, grown from the learned values, then raised
    second = stage_resources(cfg, "qsirecon_reconstruct", wc, 2, tmp_path, plan=plan)
    assert second["mem_mb"] == 32000 and second["runtime"] == 225


def test_the_main_process_exports_its_plan_and_a_job_takes_it(tmp_path):
    env: dict[str, str] = {}
    main = resource_plan(CFG, tmp_path, main=True, executor="local", env=env)
    assert main.billing.model == "none"  # local runs bill nothing
    exported = env[environment.RESOURCE_PLAN]
    add_sample(tmp_path, "qsirecon", Sample(1, 1.0, 8))  # history grows meanwhile
    job = resource_plan(CFG, tmp_path, main=False, executor="slurm-jobstep", env=dict(env))
    assert job == ResourcePlan.from_json(exported) == main
    # the main process always plans afresh, whatever it inherited
    again = resource_plan(study_config(min_history=1), tmp_path, main=True, executor="local",
                          env={environment.RESOURCE_PLAN: exported})  # fmt: skip
    assert again.samples["qsirecon"] == 1


def test_a_config_file_sets_learning_and_billing(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({
        "stages": {"qsiparc": {"learn": {"min_history": 2}, "floor": {"mem_mb": 50, "runtime": 1}}},
        "billing": {"model": "cpus", "mem_per_cpu_mb": 2000, "raise_memory": "first_attempt"},
    }))  # fmt: skip
    cfg = load_config(tmp_path, ["study.yaml"])
    for peak in (100, 200):
        add_sample(tmp_path, "qsiparc", Sample(peak, 2.0, 1))
    plan = resource_plan(cfg, tmp_path, main=True, executor="local", env={})
    assert plan.first["qsiparc"]["mem_mb"] == 2000  # learned 209, raised to 1 x 2000 free
    assert plan.first["qsiparc"]["runtime"] == 3


# --------------------------------------------------------------------------- work directories


def test_the_work_directory_is_kept_only_where_the_tool_can_resume(tmp_path):
    work = tmp_path / "work"
    assert prepare(work, None) == (False, None) and work.is_dir()  # nothing to resume
    (work / "node").mkdir()
    failed = record(1, "2026-01-01T00:00:00+00:00", error_class="ResourceError", resource="memory")
    assert prepare(work, failed) == (True, "attempt 1 stopped for memory")
    transient = record(1, "2026-01-01T00:00:00+00:00", error_class="TransientError")
    assert prepare(work, transient)[0] is True
    assert prepare(work, None) == (True, "no earlier attempt left a record")
    unknown = record(1, "2026-01-01T00:00:00+00:00", error_class="RetryableError")
    kept, why = prepare(work, unknown)
    assert not kept and why == "attempt 1 failed with unknown: not resumable"
    assert work.is_dir() and not any(work.iterdir())  # emptied, ready


def test_write_record_keeps_the_usage_fields(tmp_path):
    rec = record(1, "2026-01-01T00:00:00+00:00", peak_mem_mb=812, elapsed_s=63.2, cpu_s=41.0,
                 usage_source="sstat", resumed=True)  # fmt: skip
    path = write_record(tmp_path, rec)
    data = json.loads(Path(path).read_text())
    assert (data["peak_mem_mb"], data["usage_source"], data["resumed"]) == (812, "sstat", True)
