"""Instance segmentation: detectors, the refinement pass, output formats, and the COCO / LVIS benchmarks
against pycocotools / lvis run directly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtasks import SamPredictor, build_sam
from samtasks.cli import main
from samtasks.data import CocoDataset, LvisDataset
from samtasks.evaluation import ResultsStore, load_config, run_benchmark
from samtasks.evaluation.instance import LVIS_DEFAULTS, InstanceBenchConfig, InstanceBenchmark
from samtasks.metrics.coco import CocoMaskAP, LvisMaskAP
from samtasks.structures import Detections
from samtasks.tasks.detectors import PrecomputedDetections, TorchvisionDetector, YoloDetector, make_detector
from samtasks.tasks.instance import InstanceSegmenter, valid_boxes
from samtasks.utils.export import coco_results, mask_polygon, yolo_label_lines
from samtasks.utils.masks import decode_rle

from .conftest import random_image
from .synthetic import write_dataset


@pytest.fixture()
def predictor(tiny_checkpoint):
    return SamPredictor(build_sam("tiny", tiny_checkpoint))


def _boxes_json(tmp_path: Path, dataset: CocoDataset, skip: int | None = None) -> Path:
    """The ground-truth boxes as a COCO results file (score 1 - 0.1 * index); image `skip` has none."""
    entries = [
        {"image_id": s.image_id, "category_id": a["category_id"], "bbox": a["bbox"], "score": 1 - 0.1 * i}
        for s in dataset
        if s.image_id != skip
        for i, a in enumerate(s.annotations)
    ]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(entries))
    return path


def test_refinement_feeds_back_the_best_logits(predictor, rng):
    image = random_image(rng, 80, 100)
    boxes = np.array([[10, 10, 60, 50], [30, 20, 90, 70]], np.float32)
    calls = []
    original = predictor.predict_torch

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    predictor.predict_torch = spy
    dets = Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2]), {1: "a", 2: "b"})
    result = InstanceSegmenter(predictor, multimask=True).segment(image, dets)
    (first_kw, first), (second_kw, second) = calls
    assert first_kw.get("mask_input") is None and first_kw["multimask"] is True
    best = first.iou_scores.argmax(1)
    expected = first.low_res_logits[np.arange(2), best][:, None]
    assert np.array_equal(second_kw["mask_input"].numpy(), expected.numpy())
    assert np.array_equal(second_kw["boxes"].numpy(), boxes) and second_kw["multimask"] is False
    assert np.array_equal(result.masks, second.masks[:, 0].numpy())
    np.testing.assert_allclose(result.predicted_iou, second.iou_scores[:, 0].numpy())
    assert result.scores.tolist() == pytest.approx([0.9, 0.8])

    calls.clear()
    plain = InstanceSegmenter(predictor, refine=False, score="detector*iou").segment(image, dets)
    assert len(calls) == 1
    np.testing.assert_allclose(plain.scores, [0.9, 0.8] * plain.predicted_iou, rtol=1e-6)


def test_valid_boxes_clip_and_widen():
    boxes = valid_boxes(np.array([[-5, 3, 50, 3], [99.5, 10, 120, 20]]), h=40, w=100)
    assert boxes.tolist() == [[0, 3, 50, 4], [99, 10, 100, 20]]


def test_precomputed_detections_and_empty_image(tmp_path, predictor):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": 397133, "category_id": 3, "bbox": [10, 5, 20, 30], "score": 0.5},
                {"image_id": 397133, "category_id": 1, "bbox": [0, 0, 500, 10], "score": 0.9},  # overhangs
                {"file_name": "mine.png", "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.7},
            ]
        )
    )
    dets = PrecomputedDetections(path, names={1: "person", 3: "car"})
    image = np.zeros((60, 80, 3), np.uint8)
    found = dets(image, "000000397133.jpg")
    assert found.labels.tolist() == [1, 3] and found.boxes[0].tolist() == [0, 0, 80, 10]
    assert len(dets(image, "mine.png")) == 1 and len(dets(image, 5)) == 0
    empty = InstanceSegmenter(predictor, dets).segment(image, image_id=5)
    assert empty.masks.shape == (0, 60, 80) and coco_results(empty, 5) == []
    path.write_text('{"image_id": 1}')
    with pytest.raises(ValueError, match="d.json"):
        PrecomputedDetections(path)


def test_yolo_from_yaml_reaches_sam(predictor):
    from ultralytics.utils import ASSETS

    detector = make_detector("yolov8", "yolov8n.yaml", conf=0.0, max_det=5)
    assert isinstance(detector, YoloDetector)
    image = np.asarray(Image.open(ASSETS / "bus.jpg").convert("RGB"))
    dets = detector(image)
    assert len(dets) > 0 and 0 in dets.names  # a yaml-built model has numbered classes
    h, w = image.shape[:2]
    assert (dets.boxes[:, 2] <= w + 1e-3).all() and (dets.boxes[:, 3] <= h + 1e-3).all()
    result = InstanceSegmenter(predictor, detector).segment(image)
    assert result.masks.shape == (len(dets), h, w)
    np.testing.assert_allclose(result.boxes, valid_boxes(dets.boxes, h, w))


def test_torchvision_detector_with_random_weights(rng):
    detector = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", weights="none", conf=0.0, max_det=4)
    dets = detector(random_image(rng, 120, 160))
    assert len(dets) <= 4 and dets.boxes.shape[1] == 4 and dets.names[1] == "person"
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        TorchvisionDetector("resnet50")
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("detr")


def test_gt_masks_as_predictions_give_ap_one(tmp_path):
    ann = write_dataset(tmp_path, 3)
    lvis_ann = write_dataset(tmp_path / "lvis", 3, lvis=True)
    for metric, path in ((CocoMaskAP(ann), ann), (LvisMaskAP(lvis_ann), lvis_ann)):
        for image_id, anns in _by_image(path).items():
            metric.update([{**a, "score": 1.0} for a in anns], image_id)
        values = metric.compute()
        assert values["AP"] == pytest.approx(1.0) and values["AP50"] == pytest.approx(1.0)


def _by_image(path: Path) -> dict:
    out: dict = {}
    for a in json.loads(path.read_text())["annotations"]:
        out.setdefault(a["image_id"], []).append(a)
    return out


@pytest.mark.parametrize("name", ["coco-instance", "lvis-instance"])
def test_benchmark_matches_the_official_tool_on_its_results(tmp_path, tiny_checkpoint, name, monkeypatch):
    lvis = name == "lvis-instance"
    ann = write_dataset(tmp_path / "data", 4, lvis=lvis)
    dataset = LvisDataset(ann, tmp_path / "data") if lvis else CocoDataset(ann, tmp_path / "data" / "val2017")
    boxes = _boxes_json(tmp_path, dataset, skip=103)
    defaults = LVIS_DEFAULTS if lvis else InstanceBenchConfig()
    overrides = ["data.annotations=annotations.json", "model.name=tiny", f"model.checkpoint={tiny_checkpoint}"]
    overrides += [f"detector.detections={boxes}"] + ([] if lvis else ["data.images=val2017"])
    config = load_config(defaults, None, overrides)
    result = run_benchmark(InstanceBenchmark(name, config, tmp_path / "data"), tmp_path / "out", progress=False)
    records = ResultsStore(tmp_path / "out" / "records").latest()
    assert result["images"] == 4 and records[103]["results"] == [] and result["metrics"]["detections_per_image"] == 2.25
    results = [
        {k: r[k] for k in ("image_id", "category_id", "segmentation", "score")}
        for x in records.values()
        for r in x["results"]
    ]
    assert {r["category_id"] for r in results} == {1, 2, 3}
    if lvis:
        from lvis import LVIS, LVISEval, LVISResults

        monkeypatch.setattr(np, "float", float, raising=False)  # lvis 0.5.3 uses the alias NumPy 2 removed
        gt = LVIS(str(ann))
        ev = LVISEval(gt, LVISResults(gt, results), "segm")
        ev.run()
        expected = ev.results["AP"]
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(ann))
            ev = COCOeval(gt, gt.loadRes(results), "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        expected = ev.stats[0]
    assert result["metrics"]["AP"] == pytest.approx(expected, abs=1e-12)


def test_instance_command_outputs_round_trip(tmp_path, tiny_checkpoint):
    ann = write_dataset(tmp_path / "data", 3)
    dataset = CocoDataset(ann, tmp_path / "data" / "val2017")
    boxes = _boxes_json(tmp_path, dataset, skip=102)
    out = tmp_path / "out"
    argv = ["instance", str(tmp_path / "data" / "val2017"), "--detections", str(boxes), "--sam", "tiny"]
    argv += ["--sam-checkpoint", str(tiny_checkpoint), "--format", "coco,png,yolo", "--out", str(out), "-q"]
    assert main(argv) == 0
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["file_name"] for r in results} == {"000000000100.jpg", "000000000101.jpg"}
    assert (out / "000000000102.jpg_overlay.png").is_file()
    assert (out / "labels" / "000000000102.jpg.txt").read_text() == ""
    dataset_yaml = (out / "dataset.yaml").read_text()
    assert "train: images" in dataset_yaml and (out / "images" / "000000000100.jpg.jpg").is_file()
    # RLE decodes to the mask SAM predicts for that box.
    first = results[0]
    image = np.asarray(Image.open(tmp_path / "data" / "val2017" / first["file_name"]).convert("RGB"))
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    dets = PrecomputedDetections(boxes)(image, first["file_name"])
    again = InstanceSegmenter(predictor).segment(image, dets)
    assert np.array_equal(decode_rle(first["segmentation"]).astype(bool), again.masks[0])
    # YOLO labels parse, lie in [0, 1] and rasterize back to the mask.
    lines = (out / "labels" / f"{first['file_name']}.txt").read_text().splitlines()
    mine = [r for r in results if r["file_name"] == first["file_name"]]
    assert len(lines) == sum(decode_rle(r["segmentation"]).any() for r in mine)
    for line in lines:
        values = [float(v) for v in line.split()[1:]]
        assert len(values) % 2 == 0 and len(values) >= 6 and all(0 <= v <= 1 for v in values)
    assert main(argv) == 0  # a second run finds everything done


@pytest.mark.parametrize("shape", ["rectangle", "disc", "L"])
def test_yolo_polygon_round_trip(shape):
    from skimage.draw import polygon as fill

    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w]
    mask = {
        "rectangle": (yy >= 10) & (yy < 30) & (xx >= 5) & (xx < 50),
        "disc": (yy - 30) ** 2 + (xx - 40) ** 2 <= 15**2,
        "L": ((yy >= 10) & (yy < 50) & (xx >= 10) & (xx < 20)) | ((yy >= 40) & (yy < 50) & (xx >= 10) & (xx < 60)),
    }[shape]
    inst = Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.array([2]), {2: "x"})
    from samtasks.structures import InstanceMasks

    instances = InstanceMasks(mask[None], inst.boxes, inst.scores, inst.labels, inst.names, np.ones(1, np.float32))
    (line,) = yolo_label_lines(instances, h, w)
    label, *coords = line.split()
    xy = np.array(coords, float).reshape(-1, 2) * [w, h]
    rr, cc = fill(xy[:, 1] - 0.5, xy[:, 0] - 0.5, (h, w))  # pixel centres inside the polygon
    back = np.zeros((h, w), bool)
    back[rr, cc] = True
    iou = (back & mask).sum() / (back | mask).sum()
    assert label == "2" and iou > 0.95
    assert mask_polygon(np.zeros((5, 5), bool)).shape == (0, 2)


def test_detector_errors_are_clear(tmp_path, capsys):
    from samtasks.utils.optional import MissingDependencyError, import_optional

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load YOLO weights .*broken.pt"):
        YoloDetector(str(bad))
    with pytest.raises(MissingDependencyError, match=r"pip install 'samtasks\[yolo\]'"):
        import_optional("surely_not_installed_pkg", "yolo", "the YOLO detector")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    assert main(["instance", str(image), "--detector-weights", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "broken.pt" in err and "--detector-weights" in err and "YOLO=PATH" in err
    assert main(["instance", str(image), "--format", "coco,tiff"]) == 2
    assert (
        main(["bench", "lvis-proposals", "--data", str(tmp_path), "--detector", "yolov8", "--out", str(tmp_path)]) == 2
    )
