"""Every task on every SAM family: each command and each benchmark on each family's tiny spec.

The families' equality with their official packages is proven in `test_backend_*.py`; here the
adapters run unchanged on each of them (random weights: outputs are checked for form, not quality).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS
from samtasks.cli import main

from .synthetic import write_dataset

TEST_SPECS = [name for name in MODEL_SPECS if name == "tiny" or name.startswith("test_")]
# The commands and benchmarks run on one test spec per family class (SAM-HQ's TinyViT variant
# shares the HQ decoder path with test_hq).
BACKENDS = [
    name
    for i, name in enumerate(TEST_SPECS)
    if type(MODEL_SPECS[name]) not in {type(MODEL_SPECS[n]) for n in TEST_SPECS[:i]}
]
GOLDEN = Path(__file__).parent / "golden" / "bsds500-bench"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A COCO-style and an LVIS-style set of 2 images, and their ground-truth boxes as detections."""
    root = tmp_path_factory.mktemp("backends")
    ann = write_dataset(root / "coco", 2, large=False)
    write_dataset(root / "lvis", 2, lvis=True, large=False)
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in json.loads(ann.read_text())["annotations"]
    ]
    (root / "boxes.json").write_text(json.dumps(dets))
    return root


def test_every_family_has_a_test_spec():
    families = {type(spec) for spec in MODEL_SPECS.values()}
    tested = {type(MODEL_SPECS[name]) for name in BACKENDS}
    assert len(BACKENDS) == len(families)
    assert tested == families


@pytest.mark.parametrize("name", TEST_SPECS)
def test_predictor_contract(name):
    model = build_sam(name)
    predictor = SamPredictor(model, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    predictor.set_image(image)
    boxes = [[5, 5, 40, 30], [30, 10, 69, 49]]
    out = predictor.predict(points=[[[10, 20]], [[60, 40]]], labels=[[1], [1]], boxes=boxes)
    c = model.num_multimask_outputs
    s = model.mask_input_size[0]
    assert out.masks.shape == (2, c, 50, 70) and out.iou_scores.shape == (2, c)
    assert out.low_res_logits.shape == (2, c, s, s)
    assert (out.object_scores is None) == (not MODEL_SPECS[name].family.startswith("SAM 2"))
    again = predictor.predict(points=[[10, 20]], mask_input=out.low_res_logits[:1, :1], multimask=False)
    assert again.masks.shape == (1, 1, 50, 70)


@pytest.mark.parametrize("name", BACKENDS)
def test_every_command_runs(name, data, tmp_path):
    model = ["--sam", name]
    image = data / "coco" / "val2017" / "000000000101.jpg"
    out = tmp_path / "out"
    assert main(["point", str(image), "--point", "30,30", *model, "--out", str(out / "point")]) == 0
    masks = json.loads((out / "point" / "000000000101.json").read_text())["masks"]
    assert len(masks) == build_sam(name).num_multimask_outputs
    folder = str(data / "coco" / "val2017")
    argv = ["instance", folder, "--detections", str(data / "boxes.json"), *model, "--out", str(out / "inst"), "-q"]
    assert main(argv) == 0
    results = json.loads((out / "inst" / "coco_results.json").read_text())
    assert len(results) == 6 and all("counts" in r["segmentation"] for r in results)
    argv = ["proposals", str(image), "--set", "points_per_side=4", *model, "--out", str(out / "prop"), "-q"]
    assert main(argv) == 0
    assert (out / "prop" / "000000000101.jpg.json").is_file()
    argv = ["edges", str(image), "--set", "points_per_side=4", *model, "--out", str(out / "edges"), "-q"]
    assert main(argv) == 0
    edge_map = np.asarray(Image.open(out / "edges" / "000000000101.jpg.png"))
    assert edge_map.shape == Image.open(image).size[::-1] and edge_map.dtype == np.uint8
    pytest.importorskip("open_clip")
    clip = ["--clip-pretrained", "none", "--clip-model", "ViT-S-32-alt"]
    argv = ["text", str(image), "--prompt", "a square", "--point", "30,30", *clip, *model]
    assert main([*argv, "--out", str(out / "text")]) == 0
    assert (out / "text" / "000000000101.jpg_text.json").is_file()


@pytest.mark.parametrize("name", BACKENDS)
def test_every_benchmark_runs(name, data, tmp_path):
    def bench(benchmark: str, root: Path, *sets: str, limit: int | None = None) -> dict:
        out = tmp_path / benchmark
        argv = ["bench", benchmark, "--data", str(root), "--set", f"model.name={name}", "--out", str(out), "-q"]
        argv += ["--limit", str(limit)] if limit is not None else []
        for item in sets:
            argv += ["--set", item]
        assert main(argv) == 0, benchmark
        return json.loads((out / "results.json").read_text())

    coco = data / "coco"
    lvis = data / "lvis"
    ann = "data.annotations=annotations.json"
    boxes = f"detector.detections={data / 'boxes.json'}"
    small = "task.amg.points_per_side=3"
    assert bench("coco-instance", coco, ann, "data.images=val2017", boxes)["images"] == 2
    assert bench("lvis-instance", lvis, ann, boxes)["images"] == 2
    assert bench("coco-proposals", coco, ann, "data.images=val2017", small)["images"] == 2
    assert bench("lvis-proposals", lvis, ann, small)["images"] == 2
    # The golden sample holds the images of its first two ids only.
    edges = bench("bsds-edges", GOLDEN, "task.amg.points_per_side=3", "evaluation.n_thresholds=5", limit=2)
    assert 0 <= edges["metrics"]["ODS"] <= 1
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"model: {{name: {name}}}\ntask: {{max_clicks: 3}}\n"
        "datasets:\n  shapes: {format: coco, images: val2017, annotations: annotations.json}\n"
    )
    argv = ["bench", "single-point", "--data", str(coco), "--config", str(suite), "--out", str(tmp_path / "sp"), "-q"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "sp" / "results.json").read_text())["datasets"]["shapes"]["objects"] == 6
    pytest.importorskip("open_clip")
    amg = "task.amg={points_per_side: 3, pred_iou_thresh: 0, stability_score_thresh: 0}"
    text = bench("coco-text", coco, ann, "data.images=val2017", "clip.pretrained=null", "clip.model=ViT-S-32-alt", amg)
    assert text["metrics"]["queries"] == 6
