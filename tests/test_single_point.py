"""Single-point evaluation: the center point, the RITM click rule, whole click sessions and NoC / NoF against
an independent version of the reference rules written here, click metrics on hand-computed sequences, the
records' precision, readers, and the suite end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samtasks import SamPredictor, build_sam
from samtasks.cli import main
from samtasks.data.masks import InstancePngDataset, MaskFolderDataset, sample_masks, subsample
from samtasks.evaluation import ModelConfig, ResultsStore, load_config, run_benchmark
from samtasks.evaluation.single_point import SinglePointBenchmark, SinglePointSuiteConfig, run_suite
from samtasks.metrics.single_point import ClickMetrics
from samtasks.structures import ClickResult, MaskPrediction, Sample
from samtasks.tasks.single_point import ClickEvaluator, ClickSettings, center_point, next_click
from samtasks.utils.masks import mask_iou

from .conftest import random_image
from .synthetic import write_dataset


def test_center_of_a_rectangle():
    m = np.zeros((9, 11), bool)
    m[2:7, 3:8] = True  # rows 2..6, cols 3..7: the centre pixel (5, 4) is the only one at distance 3
    assert center_point(m) == (5, 4)
    m[2:7, 3:10] = True  # 5 x 7: x = 5, 6, 7 of row 4 tie at distance 3; the first wins
    assert center_point(m) == (5, 4)


def test_center_of_an_annulus_is_in_the_ring():
    yy, xx = np.mgrid[0:41, 0:41]
    r2 = (yy - 20) ** 2 + (xx - 20) ** 2
    ring = (r2 <= 18**2) & (r2 >= 10**2)
    x, y = center_point(ring)
    assert ring[y, x] and 10**2 <= (y - 20) ** 2 + (x - 20) ** 2 <= 18**2


def test_center_of_an_l_shape_and_ties_in_row_major_order():
    m = np.zeros((10, 10), bool)
    m[1:9, 1:4] = True  # vertical bar, 3 wide
    m[6:9, 1:9] = True  # horizontal bar, 3 wide
    x, y = center_point(m)
    assert m[y, x]
    # Every pixel on the bars' middle lines is at distance 2; the first in row-major order wins.
    assert (x, y) == (2, 2)


def test_border_counts_as_boundary_and_one_pixel_mask():
    m = np.zeros((6, 6), bool)
    m[:, :] = True
    assert center_point(m) == (2, 2)  # distance 3 to the border for the four centre pixels; first wins
    edge = np.zeros((6, 8), bool)
    edge[0:2, :] = True  # a band along the top border: distance 1 everywhere; first pixel
    assert center_point(edge) == (0, 0)
    dot = np.zeros((5, 5), bool)
    dot[3, 1] = True
    assert center_point(dot) == (1, 3)
    with pytest.raises(ValueError):
        center_point(np.zeros((3, 3), bool))


def _brute_distance(region: np.ndarray) -> np.ndarray:
    """Distance from each region pixel to the nearest pixel outside it, the outside including a ring of
    pixels around the image."""
    h, w = region.shape
    padded = np.pad(region, 1)
    ys, xs = np.nonzero(~padded)
    out = np.zeros((h, w))
    for y, x in zip(*np.nonzero(region), strict=True):
        out[y, x] = np.sqrt(((ys - (y + 1)) ** 2 + (xs - (x + 1)) ** 2).min())
    return out


def _reference_click(label, pred, clicked):
    """RITM's click rule, written from its description, on a RITM label map (1 object, 0 background,
    -1 ignored): the error regions hold no ignored pixel, distances are brute force with the image border as
    boundary, clicked pixels are zeroed afterwards, a tie between the regions is negative, ties between
    pixels go to the first in row-major order."""
    fn = _brute_distance((label == 1) & ~pred)
    fp = _brute_distance((label == 0) & pred)
    fn[clicked] = 0
    fp[clicked] = 0
    if fn.max() == 0 and fp.max() == 0:
        return None  # ours: the reference would click a negative at (0, 0)
    positive = fn.max() > fp.max()
    region = fn if positive else fp
    ys, xs = np.nonzero(region == region.max())
    return int(xs[0]), int(ys[0]), bool(positive)


def _blocks(rng, h, w, p, size=3):
    """Random `size` x `size` blocks: objects and ignore regions that overlap and touch."""
    return np.kron(rng.random((h // size + 1, w // size + 1)) < p, np.ones((size, size), bool))[:h, :w]


def test_click_rule_cases():
    gt = np.zeros((12, 12), bool)
    gt[2:10, 2:10] = True
    empty = np.zeros_like(gt)
    assert next_click(gt, empty) == (*center_point(gt), True)  # first step: the centre, positive
    big = np.ones_like(gt)
    x, y, positive = next_click(gt, big)  # false positives everywhere outside: negative click
    assert not positive and not gt[y, x]
    assert next_click(gt, gt) is None  # nothing left to click
    clicked = np.zeros_like(gt)
    cx, cy = center_point(gt)
    clicked[cy, cx] = True
    assert next_click(gt, empty, clicked)[:2] != (cx, cy)  # a clicked pixel is never chosen again


def test_ignore_region_is_boundary_before_the_distance_transforms():
    # Columns [ignore, bg, bg, obj, obj, obj], prediction [1, 1, 1, 0, 0, 0]: the missed object (depth 2)
    # is deeper than the wrong prediction (depth 1, the ignored column its boundary): positive at its centre.
    gt = np.zeros((3, 6), bool)
    gt[:, 3:] = True
    pred = np.zeros_like(gt)
    pred[:, :3] = True
    ignore = np.zeros_like(gt)
    ignore[:, 0] = True
    assert next_click(gt, pred, ignore=ignore) == (4, 1, True)
    # An ignore region touching the object, the prediction spilling across it: the wrong prediction beyond
    # it (columns 6..9) is 2 deep at columns 7 and 8 of rows 1..3.
    gt = np.zeros((5, 10), bool)
    gt[:, :4] = True
    ignore = np.zeros_like(gt)
    ignore[:, 4:6] = True
    assert next_click(gt, np.ones_like(gt), ignore=ignore) == (7, 1, False)
    # An ignore region over the left half of the object: the first click is the centre of the rest.
    gt = np.zeros((9, 14), bool)
    gt[1:8, 1:13] = True
    ignore = np.zeros_like(gt)
    ignore[:, 1:7] = True
    assert ignore[center_point(gt)[::-1]]
    assert center_point(gt & ~ignore) == (9, 3)
    assert next_click(gt, np.zeros_like(gt), ignore=ignore) == (9, 3, True)


def test_click_rule_equals_the_reference_rule(rng):
    for trial in range(300):
        h, w = rng.integers(3, 16, 2)
        if trial % 2:
            gt, ignore = _blocks(rng, h, w, 0.5), _blocks(rng, h, w, 0.3)
        else:
            gt, ignore = rng.random((h, w)) < 0.5, rng.random((h, w)) < 0.2
        pred = rng.random((h, w)) < rng.random()
        clicked = rng.random((h, w)) < 0.05
        label = np.where(ignore, -1, gt.astype(int))
        assert next_click(gt, pred, clicked, ignore) == _reference_click(label, pred, clicked)
        if (gt & ~ignore).any():  # the first click: the rule on an empty prediction
            first = _reference_click(label, np.zeros_like(gt), np.zeros_like(gt))
            assert (*center_point(gt & ~ignore), True) == first


class _ScriptedPredictor:
    """Stands in for `SamPredictor`: each prompt is answered by painting 7 x 7 squares around its clicks in
    order (positive on, negative off), the same mask for all outputs, so a session is fully predictable."""

    def set_image(self, image):
        self.size = image.shape[:2]

    def reset_image(self):
        self.size = None

    def predict_torch(self, points, labels, mask_input=None, *, multimask=True):
        masks = np.stack([_painted(p.numpy(), lab.numpy(), self.size) for p, lab in zip(points, labels, strict=True)])
        c = 3 if multimask else 1
        masks = torch.from_numpy(masks)[:, None].expand(-1, c, -1, -1)  # [B, C, H, W]
        return MaskPrediction(masks, torch.zeros(len(masks), c), torch.zeros(len(masks), c, 8, 8))


def _painted(points, labels, size):
    mask = np.zeros(size, bool)
    for (x, y), label in zip(points.astype(int), labels, strict=True):
        if label >= 0:  # -1 pads objects with fewer clicks
            mask[max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = label == 1
    return mask


def _reference_session(label, max_clicks):
    """RITM's `evaluate_sample` from its description, answered by `_painted`: clicks from an empty
    prediction on, IoU without ignored pixels; (clicks, IoUs) with -1 / the last IoU once nothing is left."""
    pred = np.zeros(label.shape, bool)
    clicked = np.zeros(label.shape, bool)
    points, ious = [], []
    for _ in range(max_clicks):
        click = _reference_click(label, pred, clicked)
        if click is not None:
            points.append(click)
            clicked[click[1], click[0]] = True
            xy = np.array([p[:2] for p in points])
            pred = _painted(xy, np.array([int(p[2]) for p in points]), label.shape)
        obj = label == 1
        ious.append((obj & pred).sum() / ((obj | pred) & (label != -1)).sum())
    clicks = [(x, y, int(positive)) for x, y, positive in points]
    return clicks + [(-1, -1, -1)] * (max_clicks - len(clicks)), ious


def test_click_sessions_equal_the_reference_sessions(rng):
    evaluator = ClickEvaluator(_ScriptedPredictor(), max_clicks=8)
    image = np.zeros((14, 17, 3), np.uint8)
    for _ in range(12):
        ignore = _blocks(rng, 14, 17, 0.3)
        gts = np.stack([_blocks(rng, 14, 17, 0.3, size=int(rng.integers(2, 5))) for _ in range(3)])
        gts = gts[(gts & ~ignore).any((1, 2))]
        result = evaluator.evaluate(image, gts, ignore)
        for i, gt in enumerate(gts):
            clicks, ious = _reference_session(np.where(ignore, -1, gt.astype(int)), 8)
            assert result.clicks[i].tolist() == [list(c) for c in clicks]
            assert result.ious[i].tolist() == ious
            assert not ignore[result.clicks[i, 0, 1], result.clicks[i, 0, 0]]
    inside = np.zeros((1, 14, 17), bool)
    inside[0, 2:5, 2:5] = True
    with pytest.raises(ValueError, match="outside the ignore region"):
        evaluator.evaluate(image, inside, inside[0])


def test_click_metrics_hand_computed():
    m = ClickMetrics(clicks_at=(1, 2, 3), noc_thresholds=(0.85, 0.9), noc_max_clicks=3)
    m.add({"ious": [[0.5, 0.86, 0.95], [0.9, 0.91, 0.92], [0.1, 0.2, 0.3]], "oracle": [0.6, 0.95, 0.4]})
    out = m.compute()
    assert out["mIoU@1"] == pytest.approx(0.5) and out["mIoU@3"] == pytest.approx((0.95 + 0.92 + 0.3) / 3)
    assert out["oracle_mIoU@1"] == pytest.approx(0.65)
    assert out["NoC@85"] == pytest.approx((2 + 1 + 3) / 3) and out["NoF@85"] == 1
    # The first object reaches 0.9 exactly at the last click: a failure, as in the reference.
    assert out["NoC@90"] == pytest.approx((3 + 1 + 3) / 3) and out["NoF@90"] == 2
    assert (
        "NoC@85" not in ClickMetrics(noc_max_clicks=20).compute()
        and mask_iou(np.zeros(3, bool), np.zeros(3, bool)) == 1
    )
    # The same means in any record order (sharded runs): (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1 in floats.
    forward, backward = ClickMetrics(clicks_at=(1,)), ClickMetrics(clicks_at=(1,))
    for ious in ([0.1], [0.2], [0.3]):
        forward.add({"ious": [ious], "oracle": ious})
    for ious in ([0.3], [0.2], [0.1]):
        backward.add({"ious": [ious], "oracle": ious})
    assert forward.compute() == backward.compute()


def _reference_noc(ious, t, max_clicks):
    """RITM's NoC from its description: the first click whose float32 IoU is >= t (in float32), else the
    maximum."""
    for click, iou in enumerate(ious[:max_clicks], 1):
        if np.float32(iou) >= np.float32(t):
            return click
    return max_clicks


def test_noc_and_nof_equal_the_reference_rule(rng):
    near = [0.85, 0.9, 0.85 - 1e-9, 0.9 - 1e-9, 0.85 - 3e-7, 0.84999975, 0.9 + 1e-9, 0.89999999]
    for _ in range(20):
        ious = np.where(rng.random((30, 6)) < 0.3, rng.choice(near, (30, 6)), rng.random((30, 6)))
        metric = ClickMetrics(clicks_at=(1,), noc_max_clicks=5)
        metric.add({"ious": ious, "oracle": np.zeros(30)})
        out = metric.compute()
        for t in (0.85, 0.9):
            noc = np.array([_reference_noc(row, t, 5) for row in ious])
            key = round(t * 100)
            assert out[f"NoC@{key}"] == pytest.approx(noc.mean()) and out[f"NoF@{key}"] == (noc == 5).sum()


class _FixedEvaluator:
    """Stands in for `ClickEvaluator`: the same IoUs for every image."""

    def __init__(self, ious):
        self.ious = np.asarray(ious)

    def evaluate(self, image, gt_masks, ignore=None):
        assert len(gt_masks) == len(self.ious)
        return ClickResult(self.ious, self.ious[:, 0], np.full((*self.ious.shape, 3), -1))


def test_records_decide_thresholds_as_the_raw_ious(tmp_path, rng):
    _mask_folder(tmp_path, rng)
    config = SinglePointSuiteConfig(datasets={"f": {"format": "mask-folder"}})
    benchmark = SinglePointBenchmark("f", config, tmp_path)
    # 0.84999975 reads as 0.85 at 6 decimals but stays below 0.85 in float32; 0.8999999999 is 0.9 in float32.
    ious = np.array([[0.84999975] * 20, [0.5] * 19 + [0.8999999999]])
    benchmark.evaluator = _FixedEvaluator(ious)
    record = json.loads(json.dumps(benchmark.process(benchmark.samples()[0])))
    assert record["ious"] == ious.tolist()
    raw = ClickMetrics(config.clicks_at)
    raw.add({"ious": ious, "oracle": ious[:, 0]})
    expected = raw.compute()
    assert benchmark.evaluate(iter([record])) == expected
    assert expected["NoC@85"] == 20 and expected["NoF@85"] == 2 and expected["NoC@90"] == 20


def test_objects_inside_the_ignore_region_are_left_out(tmp_path, rng):
    _mask_folder(tmp_path, rng)
    config = SinglePointSuiteConfig(datasets={"f": {"format": "mask-folder"}})
    benchmark = SinglePointBenchmark("f", config, tmp_path)
    benchmark.evaluator = ClickEvaluator(_ScriptedPredictor(), max_clicks=20)
    sample = benchmark.samples()[0]
    crowd = {"id": 9, "mask_file": sample.annotations[0]["mask_file"], "iscrowd": 1}  # covers object 1
    sample = Sample(sample.image_id, sample.path, sample.height, sample.width, (*sample.annotations, crowd))
    record = benchmark.process(sample)
    assert record["object_ids"] == [2] and len(record["ious"]) == 1


def test_evaluator_on_the_tiny_model(tiny_checkpoint, rng):
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    image = random_image(rng, 64, 80)
    gts = np.zeros((3, 64, 80), bool)
    gts[0, 5:30, 5:40] = True
    gts[1, 35:60, 10:70] = True
    gts[2, 10:20, 50:75] = True
    result = ClickEvaluator(predictor, max_clicks=4).evaluate(image, gts)
    assert result.ious.shape == (3, 4) and result.clicks.shape == (3, 4, 3)
    assert np.all((0 <= result.ious) & (result.ious <= 1)) and np.all(result.oracle_iou >= 0)
    assert tuple(result.clicks[0, 0]) == (*center_point(gts[0]), 1)
    # A later click is the RITM click for the answer before it.
    step1 = ClickEvaluator(predictor, max_clicks=1).evaluate(image, gts)
    assert np.array_equal(step1.ious[:, 0], result.ious[:, 0])
    predictor.set_image(image)
    for i in range(3):
        cx, cy, _ = result.clicks[i, 0]
        first = predictor.predict(points=[[cx, cy]], labels=[1], multimask=True)
        answer = first.masks[0, first.best()[0]]
        clicked = np.zeros_like(gts[i])
        clicked[cy, cx] = True
        expected = next_click(gts[i], answer, clicked)
        assert tuple(result.clicks[i, 1]) == ((*expected[:2], int(expected[2])) if expected else (-1, -1, -1))
        assert result.ious[i, 0] == pytest.approx(mask_iou(answer, gts[i]))
    random_first = ClickEvaluator(predictor, max_clicks=1, first_point="random", seed=3).evaluate(image, gts[:1])
    x, y, _ = random_first.clicks[0, 0]
    assert gts[0][y, x]


def _mask_folder(root, rng):
    (root / "images").mkdir(parents=True)
    (root / "masks" / "a").mkdir(parents=True)
    Image.fromarray(random_image(rng, 40, 50)).save(root / "images" / "a.png")
    m = np.zeros((40, 50), np.uint8)
    m[5:20, 5:25] = 255
    Image.fromarray(m).save(root / "masks" / "a" / "0.png")
    m2 = np.zeros((40, 50), np.uint8)
    m2[25:35, 10:45] = 1
    Image.fromarray(m2).save(root / "masks" / "a_1.png")


def test_readers_and_subsample(tmp_path, rng):
    _mask_folder(tmp_path / "mf", rng)
    sample = MaskFolderDataset(tmp_path / "mf" / "images", tmp_path / "mf" / "masks")[0]
    masks, ignore, anns = sample_masks(sample)
    assert masks.shape == (2, 40, 50) and masks[0].sum() == 15 * 20 and not ignore.any()
    (tmp_path / "ip" / "images").mkdir(parents=True)
    (tmp_path / "ip" / "inst").mkdir()
    Image.fromarray(random_image(rng, 30, 30)).save(tmp_path / "ip" / "images" / "b.jpg")
    ids = np.zeros((30, 30), np.uint8)
    ids[0:10, 0:10], ids[15:25, 15:25], ids[0:5, 20:30] = 3, 7, 255
    Image.fromarray(ids).save(tmp_path / "ip" / "inst" / "b.png")
    sample = InstancePngDataset(tmp_path / "ip" / "images", tmp_path / "ip" / "inst", ignore_value=255)[0]
    masks, ignore, anns = sample_masks(sample)
    assert [a["instance_id"] for a in anns] == [3, 7] and ignore.sum() == 50
    ann = write_dataset(tmp_path / "coco", 4)
    from samtasks.data import CocoDataset

    samples = list(CocoDataset(ann, tmp_path / "coco" / "val2017"))
    cut = subsample(samples, 5, seed=0)
    assert sum(len(s.annotations) for s in cut) == 5 and cut == subsample(samples, 5, seed=0)


def _image_with_objects(root, fmt: str, name: str, k: int, rng) -> None:
    """`root/images/<name>.png` with `k` objects, as one PNG per object or one instance-id PNG."""
    Image.fromarray(random_image(rng, 24, 40)).save(root / "images" / f"{name}.png")
    ids = np.zeros((24, 40), np.uint8)
    for i in range(k):
        ids[2 + 7 * i : 6 + 7 * i, 3:30] = i + 1
    if fmt == "instance-png":
        Image.fromarray(ids).save(root / "masks" / f"{name}.png")
    for i in range(k if fmt == "mask-folder" else 0):
        Image.fromarray((ids == i + 1).astype(np.uint8)).save(root / "masks" / f"{name}_{i}.png")


@pytest.mark.parametrize("fmt", ["mask-folder", "instance-png"])
def test_records_stay_with_their_images_when_a_file_is_added(tmp_path, tiny_checkpoint, rng, fmt):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name, k in [("a", 1), ("c", 3)]:
        _image_with_objects(tmp_path, fmt, name, k, rng)
    config = SinglePointSuiteConfig(
        model=ModelConfig(name="tiny", checkpoint=str(tiny_checkpoint), device="cpu"),
        task=ClickSettings(max_clicks=1),
        datasets={"f": {"format": fmt}},
    )
    run_benchmark(SinglePointBenchmark("f", config, tmp_path), tmp_path / "out", progress=False)
    _image_with_objects(tmp_path, fmt, "b", 2, rng)  # sorts between the two done images
    benchmark = SinglePointBenchmark("f", config, tmp_path)
    result = run_benchmark(benchmark, tmp_path / "out", progress=False)
    assert result["images"] == 3 and result["timings"]["this_run_images_rank0"] == 1
    records = ResultsStore(tmp_path / "out" / "records").latest()
    assert [len(records[s.image_id]["ious"]) for s in benchmark.samples()] == [1, 2, 3]  # a, b, c's objects


def test_suite_end_to_end_with_a_missing_dataset(tmp_path, tiny_checkpoint, rng):
    data = tmp_path / "data"
    write_dataset(data / "shapes", 2, large=False)
    _mask_folder(data / "folder", rng)
    config_path = tmp_path / "suite.yaml"
    config_path.write_text(
        "model: {name: tiny, checkpoint: " + str(tiny_checkpoint) + "}\n"
        "task: {max_clicks: 20}\n"
        "datasets:\n"
        "  shapes: {format: coco, images: shapes/val2017, annotations: shapes/annotations.json}\n"
        "  folder: {format: mask-folder, images: folder/images, masks: folder/masks}\n"
        "  absent: {format: coco, images: absent/images, annotations: absent/a.json}\n"
    )
    argv = ["bench", "single-point", "--data", str(data), "--config", str(config_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 0
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(summary["datasets"]) == {"shapes", "folder"} and "absent" in summary["skipped"]
    shapes = summary["datasets"]["shapes"]
    assert shapes["objects"] == 6 and {"mIoU@1", "mIoU@9", "oracle_mIoU@1", "NoC@85", "NoC@90"} <= set(shapes)
    mean = (shapes["mIoU@1"] + summary["datasets"]["folder"]["mIoU@1"]) / 2
    assert summary["mean_over_datasets"]["mIoU@1"] == pytest.approx(mean)
    assert (tmp_path / "out" / "miou_vs_clicks.png").is_file()
    config = load_config(SinglePointSuiteConfig(), config_path)
    again = run_suite(config, data, tmp_path / "out", datasets=["folder"], progress=False)  # resumes: nothing to do
    assert again["datasets"]["folder"] == summary["datasets"]["folder"]
    assert main([*argv, "--datasets", "nope"]) == 1


def test_suite_with_a_failed_image_exits_1_naming_it(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    write_dataset(data / "shapes", 2)
    broken = sorted((data / "shapes" / "val2017").iterdir())[0]
    broken.write_bytes(b"not an image")
    config_path = tmp_path / "suite.yaml"
    config_path.write_text(
        "model: {name: tiny, checkpoint: " + str(tiny_checkpoint) + "}\n"
        "task: {max_clicks: 2}\n"
        "datasets:\n"
        "  shapes: {format: coco, images: shapes/val2017, annotations: shapes/annotations.json}\n"
    )
    argv = ["bench", "single-point", "--data", str(data), "--config", str(config_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 1
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    (failed,) = summary["failed"]
    assert failed["dataset"] == "shapes" and broken.name in failed["error"]
    assert summary["datasets"]["shapes"]["objects"] > 0
