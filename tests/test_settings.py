"""Settings and presets: the shared `preset_with_overrides`, one `<Task>Settings` + `PRESETS` +
`from_preset` per adapter with names unique across tasks, and bench configs whose `task:` section is
checked when loaded."""

from __future__ import annotations

import dataclasses

import pytest

from samtasks.cli import main
from samtasks.evaluation import ConfigError, benchmarks, load_config
from samtasks.tasks import amg, edges, instance, proposals, single_point, text
from samtasks.utils.settings import preset_with_overrides

ADAPTERS = {
    amg: (amg.AmgSettings, amg.AutomaticMaskGenerator),
    proposals: (proposals.ProposalSettings, proposals.ProposalGenerator),
    edges: (edges.EdgeSettings, edges.EdgeDetector),
    text: (text.TextSettings, text.TextSegmenter),
    instance: (instance.InstanceSettings, instance.InstanceSegmenter),
    single_point: (single_point.ClickSettings, single_point.ClickEvaluator),
}


@pytest.mark.parametrize("module", ADAPTERS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_adapter_has_settings_presets_and_from_preset(module):
    settings, adapter = ADAPTERS[module]
    assert dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen
    assert module.PRESETS and all(type(p) is settings for p in module.PRESETS.values())
    injected = {"encoder": None} if module is text else {}  # what the adapter takes besides the predictor
    with pytest.raises(ValueError, match=rf"unknown {settings.__name__} preset 'nope'; choose one of"):
        adapter.from_preset(None, "nope", **injected)
    with pytest.raises(ValueError, match=rf"unknown {settings.__name__} field\(s\) colour \(known: "):
        adapter.from_preset(None, next(iter(module.PRESETS)), colour=1, **injected)


def test_preset_names_are_unique_across_tasks():
    names = [name for module in ADAPTERS for name in module.PRESETS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_preset_with_overrides():
    base = edges.PRESETS["edges-reference"]
    merged = preset_with_overrides(edges.PRESETS, "edges-reference", {"amg": {"points_per_side": 4}, "gate": False})
    assert merged.amg == {"batch_nms_thresh": 0.7, "points_per_side": 4} and merged.gate is False
    assert base.amg == {"batch_nms_thresh": 0.7}  # the preset itself is untouched
    with pytest.raises(ValueError, match=r"unknown EdgeSettings field\(s\) colour, size"):
        preset_with_overrides(edges.PRESETS, "edges-paper", {"size": 1, "colour": 2, "gate": False})
    with pytest.raises(ValueError, match=r"unknown AmgSettings field\(s\) points_per_sid"):
        preset_with_overrides(edges.PRESETS, "edges-paper", {"amg": {"points_per_sid": 3}})
    with pytest.raises(ValueError, match="points_per_side must be an integer"):
        preset_with_overrides(amg.PRESETS, "official", {"points_per_side": 2.5})
    with pytest.raises(ValueError, match="max_clicks must be in"):
        single_point.ClickEvaluator.from_preset(None, "clicks-miou", max_clicks=0)


def test_from_preset_builds_the_preset(tiny_checkpoint):
    from samtasks import SamPredictor, build_sam

    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    assert single_point.ClickEvaluator.from_preset(predictor, "clicks-noc").settings.max_clicks == 20
    segmenter = instance.InstanceSegmenter.from_preset(predictor, "instance-boxes", score="detector*iou")
    assert segmenter.settings == instance.InstanceSettings(score="detector*iou")
    generator = amg.AutomaticMaskGenerator.from_preset(predictor, "text-candidates", points_per_side=4)
    assert (generator.settings.points_per_side, generator.settings.pred_iou_thresh) == (4, 0.80)


@pytest.mark.parametrize("name", sorted(benchmarks()))
def test_bench_config_task_typo_fails_at_load(name):
    defaults = benchmarks()[name].defaults
    nested = "amg" in {f.name for f in dataclasses.fields(defaults.task)}
    key = "amg={points_per_sid: 3}" if nested else "points_per_sid=3"
    with pytest.raises(ConfigError, match="points_per_sid"):
        load_config(defaults, None, [f"task.{key}"])


def test_text_bench_typo_fails_before_any_model_is_built(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr("samtasks.build.build_sam", no_model)
    argv = ["bench", "coco-text", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--set", "task.amg={points_per_sid: 3}"]) == 1
    err = capsys.readouterr().err
    assert "points_per_sid" in err and "task" in err
    assert not (tmp_path / "out").exists()
