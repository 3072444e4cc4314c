"""The runner machinery: configs, the results store, resume after a crash, --limit, failed images,
and sharding under torchrun (2 gloo processes give the 1-process metrics)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samtasks.cli import main
from samtasks.evaluation import ConfigError, ResultsStore, benchmarks, load_config, run_benchmark
from samtasks.evaluation.config import dump_yaml
from samtasks.evaluation.proposals import ProposalsBenchConfig, ProposalsBenchmark
from samtasks.evaluation.runner import RunInterrupted

from .synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def raise_at_third(bench, error: type[BaseException]) -> None:
    """Makes `bench.process` raise `error` on its third image."""
    process, calls = bench.process, []

    def failing(sample):
        calls.append(sample.image_id)
        if len(calls) == 3:
            raise error
        return process(sample)

    bench.process = failing


def test_config_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: vit_b\ntask:\n  amg:\n    points_per_side: 16\n")
    config = load_config(ProposalsBenchConfig(), path, ["task.max_proposals=50", "max_dets=[1, 5]"])
    assert config.model.name == "vit_b" and config.model.dtype == "float32"
    assert config.task.amg == {"points_per_side": 16} and config.task.max_proposals == 50
    assert config.max_dets == (1, 5)
    assert load_config(ProposalsBenchConfig(), None, []) == ProposalsBenchConfig()


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("model:\n  nmae: vit_b\n", [], r"c.yaml: unknown key 'model.nmae'"),
        ("colour: red\n", [], r"c.yaml: unknown key 'colour'"),
        ("", ["task.max_proposals=many"], r"task.max_proposals must be an integer"),
        ("", ["task.ranking=best"], r"ranking must be one of"),
        ("", ["task.amg.points_per_sid=3"], r"points_per_sid"),
        ("model: 3\n", [], r"model must be a mapping"),
        ("- a\n", [], r"mapping at the top level"),
        ("", ["novalue"], r"--set expects key=value"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(ProposalsBenchConfig(), path, overrides)


@pytest.mark.parametrize("name", sorted(benchmarks()))
def test_shipped_configs_are_the_defaults(name):
    """configs/*.yaml document the paper protocol; they must equal the built-in defaults (the suite's
    datasets, which it requires, aside)."""
    spec = benchmarks()[name]
    loaded = load_config(spec.defaults, ROOT / "configs" / spec.config_file)
    if spec.requires_config:
        assert loaded.datasets and spec.defaults.datasets == {}
        loaded = dataclasses.replace(loaded, datasets={})
    assert loaded == spec.defaults


def test_store_discards_a_cut_off_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"image_id": 1, "x": 1})
    store.append({"image_id": 2, "error": "unreadable"})
    store.close()
    with open(store.path, "a") as f:
        f.write('{"image_id": 3, "x": ')  # a crash mid-write
    store = ResultsStore(tmp_path)
    assert [r["image_id"] for r in store.records()] == [1, 2]
    store.append({"image_id": 2, "x": 2})
    store.close()
    assert store.latest()[2] == {"image_id": 2, "x": 2}
    assert store.path.read_text().count("\n") == 3


@pytest.fixture()
def bench_setup(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "data", 5, lvis=True, large=False)
    overrides = [
        "data.annotations=annotations.json",
        "model.name=tiny",
        f"model.checkpoint={tiny_checkpoint}",
        "task.amg.points_per_side=3",
        "task.amg.box_nms_thresh=1.0",
        "max_dets=[1, 3, 100]",
    ]
    return tmp_path, load_config(ProposalsBenchConfig(), None, overrides)


def _stable(result: dict) -> dict:
    """The results JSON without what legitimately differs between runs (timings, time stamps)."""
    return {k: v for k, v in result.items() if k not in ("timings", "finished")}


def _records(out: Path) -> dict:
    """Every image's record without its timing; random weights make AR alone a weak check."""
    latest = ResultsStore(out / "records").latest()
    return {k: {f: v for f, v in r.items() if f != "seconds"} for k, r in latest.items()}


class _Crash(Exception):
    pass


def test_resume_after_crash_gives_the_same_results(bench_setup):
    tmp, config = bench_setup
    whole = run_benchmark(ProposalsBenchmark("lvis-proposals", config, tmp / "data"), tmp / "a", progress=False)
    assert whole["images"] == 5 and whole["metrics"]["AR@100"] >= 0 and whole["metrics"]["proposals_per_image"] > 0

    crashing = ProposalsBenchmark("lvis-proposals", config, tmp / "data")
    raise_at_third(crashing, _Crash)
    with pytest.raises(_Crash):
        run_benchmark(crashing, tmp / "b", progress=False)
    records = tmp / "b" / "records" / "rank0.jsonl"
    assert records.read_text().count("\n") == 2
    with open(records, "a") as f:
        f.write('{"image_id": 102, "stats": {"num')  # and a record cut off by the crash

    resumed = ProposalsBenchmark("lvis-proposals", config, tmp / "data")
    seen = []
    process2 = resumed.process
    resumed.process = lambda s: seen.append(s.image_id) or process2(s)
    result = run_benchmark(resumed, tmp / "b", progress=False)
    assert seen == [102, 103, 104]  # finished images are not redone
    assert _stable(result) == _stable(whole)
    assert _records(tmp / "b") == _records(tmp / "a")
    assert json.loads((tmp / "b" / "results.json").read_text())["metrics"] == whole["metrics"]


def test_limit_failed_images_and_config_mismatch(bench_setup):
    tmp, config = bench_setup
    (tmp / "data" / "val2017" / "000000000101.jpg").write_bytes(b"not a jpeg")
    bench = ProposalsBenchmark("lvis-proposals", config, tmp / "data")
    result = run_benchmark(bench, tmp / "out", limit=3, progress=False)
    assert result["images"] == 2 and result["limit"] == 3
    assert result["failed"][0]["image_id"] == 101 and "000000000101.jpg" in result["failed"][0]["error"]
    other = load_config(config, None, ["task.max_proposals=7"])
    with pytest.raises(ConfigError, match=r"different config .*task.max_proposals \(now 7, recorded 1000\)"):
        run_benchmark(ProposalsBenchmark("lvis-proposals", other, tmp / "data"), tmp / "out", progress=False)
    assert (tmp / "out" / "config.yaml").read_text() == dump_yaml(config)
    # Resources may change on resume (a run out of memory goes on with smaller batches).
    smaller = load_config(config, None, ["model.prompt_batch_size=2", "task.amg.points_per_batch=4"])
    result = run_benchmark(ProposalsBenchmark("lvis-proposals", smaller, tmp / "data"), tmp / "out", progress=False)
    assert result["images"] == 4 and len(result["failed"]) == 1
    with pytest.raises(ValueError, match="--limit must be >= 0"):
        run_benchmark(bench, tmp / "out", limit=-2, progress=False)


def test_results_name_the_device_the_model_is_on(bench_setup, monkeypatch):
    tmp, config = bench_setup
    # The best available device is not the one the config asks for: the results follow the model.
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    config = load_config(config, None, ["model.device=cpu"])
    result = run_benchmark(
        ProposalsBenchmark("lvis-proposals", config, tmp / "data"), tmp / "out", limit=1, progress=False
    )
    assert result["model_device"] == "cpu"


def test_ctrl_c_stops_a_bench_in_one_line_and_it_resumes(bench_setup):
    tmp, config = bench_setup
    bench = ProposalsBenchmark("lvis-proposals", config, tmp / "data")
    raise_at_third(bench, KeyboardInterrupt)
    with pytest.raises(RunInterrupted, match="interrupted after 2 of 5 images; .* the same command resumes"):
        run_benchmark(bench, tmp / "out", progress=False)
    assert (
        run_benchmark(ProposalsBenchmark("lvis-proposals", config, tmp / "data"), tmp / "out", progress=False)[
            "timings"
        ]["this_run_images_rank0"]
        == 3
    )


def test_a_bench_failing_before_its_first_image_leaves_no_config(bench_setup, capsys):
    tmp, config = bench_setup
    argv = ["bench", "lvis-proposals", "--data", str(tmp / "data"), "--out", str(tmp / "out"), "-q"]
    argv += ["--set", "data.annotations=annotations.json", "--set", "model.name=tiny"]
    argv += ["--set", "task.amg.points_per_side=3"]
    assert main([*argv, "--set", "model.checkpoint=/nowhere/tiny.pth"]) == 1
    assert "/nowhere/tiny.pth does not exist" in capsys.readouterr().err
    assert main([*argv, "--set", "model.dtype=float61"]) == 1
    assert "dtype must be one of" in capsys.readouterr().err
    assert not (tmp / "out" / "config.yaml").exists()
    (tmp / "data" / "val2017" / "000000000101.jpg").write_bytes(b"not a jpeg")
    assert main([*argv, "--set", f"model.checkpoint={config.model.checkpoint}", "--limit", "2"]) == 1  # one failed
    assert "1 failed" in capsys.readouterr().out
    assert main([*argv, "--limit", "-2"]) == 2


def test_two_process_torchrun_gives_the_same_records_and_metrics(tmp_path, tiny_checkpoint):
    """The one torchrun test: a single-point suite of two datasets in one 2-process gloo run (one process
    group for both benchmarks) shards every dataset by rank and gives the records and metrics of one
    process."""
    data = tmp_path / "data"
    write_dataset(data / "a", 3, large=False)
    write_dataset(data / "b", 2, seed=1, large=False)
    config_path = tmp_path / "suite.yaml"
    config_path.write_text(
        "model: {name: tiny, checkpoint: " + str(tiny_checkpoint) + "}\n"
        "task: {max_clicks: 3}\n"
        "datasets:\n"
        "  a: {format: coco, images: a/val2017, annotations: a/annotations.json}\n"
        "  b: {format: coco, images: b/val2017, annotations: b/annotations.json}\n"
    )
    command = ["bench", "single-point", "--data", str(data), "--config", str(config_path), "-q"]
    assert main([*command, "--out", str(tmp_path / "one")]) == 0
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "samtasks.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run(
        [*prefix, *command, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert set(two["datasets"]) == {"a", "b"} and two["datasets"] == one["datasets"]
    for name, images in (("a", 3), ("b", 2)):
        records = tmp_path / "two" / name / "records"
        assert sorted(p.name for p in records.iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
        assert [json.loads(line)["image_id"] for line in (records / "rank1.jsonl").open()] == [101]  # every 2nd
        assert _records(tmp_path / "two" / name) == _records(tmp_path / "one" / name)
        result = json.loads((tmp_path / "two" / name / "results.json").read_text())
        assert result["timings"]["world_size"] == 2 and result["images"] == images


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluation.n_thresholds=0", "n_thresholds must be >= 1"),
        ("evaluation.max_dist=-0.1", "max_dist is a fraction"),
        ("model.name=vit_q", "name must be one of"),
        ("model.prompt_batch_size=0", "prompt_batch_size must be >= 1"),
        ("task.smooth_radius=-1", "smooth_radius must be >= 0"),
        ("task.amg={points_per_side: 2.5}", "points_per_side must be an integer"),
    ],
)
def test_bench_configs_are_range_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(benchmarks()["bsds-edges"].defaults, None, [override])
