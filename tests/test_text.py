"""Text to mask: the crop recipe, the ranking with a constructed encoder, candidate reuse, errors, and
the pipeline end to end with open_clip's real tokenizer and random weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.structures import GeneratedMasks
from samtasks.tasks.text import OpenClipEncoder, TextSegmenter, TextSettings, mask_crop
from samtasks.utils.masks import encode_rle, masks_to_boxes

from .conftest import random_image

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)
GRAY = (0.5, 0.5, 0.5)


class ColourEncoder:
    """Image feature: the crop's mean colour minus the fill colour; text feature: the named colour minus
    the fill colour. A crop that leaked a neighbour's pixels would point elsewhere."""

    input_size = 16
    mean = GRAY
    logit_scale = 10.0

    def __init__(self):
        self.image_calls = 0
        self.text_calls = 0

    def encode_images(self, crops):
        self.image_calls += 1
        feats = crops.reshape(len(crops), -1, 3).mean(1) / 255 - np.array(GRAY)
        return torch.nn.functional.normalize(torch.as_tensor(feats, dtype=torch.float32), dim=-1)

    def encode_texts(self, texts):
        self.text_calls += 1
        colours = {"red": RED, "blue": BLUE, "green": GREEN}
        feats = [np.array(next(c for k, c in colours.items() if k in t)) / 255 - np.array(GRAY) for t in texts]
        return torch.nn.functional.normalize(torch.as_tensor(np.stack(feats), dtype=torch.float32), dim=-1)


def _scene():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:] = GREEN
    masks = np.zeros((3, 60, 80), bool)
    masks[0, 20:40, 10:30] = True  # red square
    masks[1, 20:40, 30:50] = True  # blue square, touching it: inside the red one's enlarged box
    masks[2, 0:10, 60:80] = True  # a green patch at the image corner
    image[masks[0]] = RED
    image[masks[1]] = BLUE
    generated = GeneratedMasks(
        image_size=(60, 80),
        rles=encode_rle(masks),
        boxes=masks_to_boxes(torch.from_numpy(masks)).numpy(),
        predicted_iou=np.ones(3, np.float32),
        stability_score=np.ones(3, np.float32),
        points=np.zeros((3, 2), np.float32),
        crop_boxes=np.tile([0, 0, 80, 60], (3, 1)),
        low_res_logits=np.zeros((3, 32, 32), np.float32),
    )
    return image, masks, generated


@pytest.fixture()
def segmenter(tiny_checkpoint):
    image, masks, generated = _scene()
    encoder = ColourEncoder()
    seg = TextSegmenter(SamPredictor(build_sam("tiny", tiny_checkpoint)), encoder, TextSettings(templates=("{}",)))
    calls = []
    seg.generator.generate = lambda img: calls.append(1) or generated
    return seg, encoder, calls, image, masks


def test_crop_recipe():
    image, masks, generated = _scene()
    crop = mask_crop(image, masks[0], generated.boxes[0], size=16, fill=GRAY)
    assert crop.shape == (16, 16, 3)
    big = mask_crop(image, masks[0], generated.boxes[0], size=30, fill=GRAY, enlarge=1.5)
    colours = {tuple(c) for c in big.reshape(-1, 3)}
    assert RED in colours and BLUE not in colours and GREEN not in colours  # neighbours filled
    corner = mask_crop(image, masks[2], generated.boxes[2], size=30, fill=GRAY)  # at the image border
    assert (corner == 128).all(-1).mean() > 0.4 and (corner == GREEN).all(-1).any()
    dot = np.zeros((60, 80), bool)
    dot[5, 7] = True
    tiny = mask_crop(image, dot, np.array([7, 5, 7, 5]), size=16, fill=GRAY)
    r, g, b = tiny[8, 8].astype(int)  # the one pixel, upsampled: green at the centre
    assert tiny.shape == (16, 16, 3) and g > r + 20 and g > b + 20


def test_constructed_features_pick_the_described_mask(segmenter):
    seg, encoder, calls, image, masks = segmenter
    red = seg.query(image, "red")
    assert red.index == 0 and np.array_equal(red.mask, masks[0]) and red.selected == [0]
    assert red.ranking[0]["index"] == 0 and 0 < red.score <= 1
    assert seg.query(image, "blue").index == 1
    assert seg.query(image, "green").index == 2
    assert seg.query(image, "red").index == 0
    # Candidates and image features were computed once for the four queries, each prompt's text once.
    assert len(calls) == 1 and encoder.image_calls == 1 and encoder.text_calls == 3


def test_plural_point_fix_and_errors(segmenter):
    seg, _, _, image, masks = segmenter
    seg.settings = dataclasses.replace(seg.settings, margin=0.0)  # every candidate is within the margin
    everything = seg.query(image, "red", all=True)
    assert sorted(everything.selected) == [0, 1, 2] and np.array_equal(everything.mask, masks.any(0))
    fixed = seg.query(image, "red", point=(15, 25))
    assert fixed.refined_by_point == (15, 25) and fixed.mask.shape == (60, 80)
    with pytest.raises(ValueError, match="empty"):
        seg.query(image, "   ")
    seg.generator.generate = lambda img: GeneratedMasks(image_size=img.shape[:2])
    none = seg.query(np.zeros((10, 10, 3), np.uint8), "red")
    assert none.mask is None and none.index == -1 and none.ranking == []


def test_open_clip_random_weights_end_to_end(tiny_checkpoint, rng):
    pytest.importorskip("open_clip")
    encoder = OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu")
    assert encoder.input_size == 224
    amg = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    seg = TextSegmenter.from_preset(predictor, "text-clip", encoder=encoder, amg=amg)
    image = random_image(rng, 48, 64)
    result = seg.query(image, "a wheel")
    assert result.mask.shape == (48, 64) and len(result.ranking) == len(seg.candidates(image).masks) > 0
    probs = [r["probability"] for r in result.ranking]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_text_command_and_coco_text_benchmark(tmp_path, tiny_checkpoint):
    import json

    from PIL import Image

    from samtasks.cli import main
    from samtasks.evaluation import load_config, run_benchmark
    from samtasks.evaluation.text import TextBenchConfig, TextBenchmark

    from .synthetic import write_dataset

    pytest.importorskip("open_clip")
    write_dataset(tmp_path / "coco", 2)
    image = tmp_path / "coco" / "val2017" / "000000000101.jpg"
    model = ["--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "--clip-pretrained", "none"]
    out = tmp_path / "out"
    argv = ["text", str(image), "--prompt", "a square", "--prompt", "a disc", "--point", "40,30", *model]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "000000000101.jpg_text.json").read_text())
    assert [q["prompt"] for q in report["queries"]] == ["a square", "a disc"]
    assert main(["text", str(image), "--prompt", " ", *model]) == 2

    overrides = ["data.annotations=annotations.json", "model.name=tiny", f"model.checkpoint={tiny_checkpoint}"]
    overrides += [
        "clip.pretrained=null",
        "task.amg={points_per_side: 3, pred_iou_thresh: 0, stability_score_thresh: 0}",
    ]
    config = load_config(TextBenchConfig(), None, overrides)
    result = run_benchmark(TextBenchmark("coco-text", config, tmp_path / "coco"), tmp_path / "bench", progress=False)
    metrics = result["metrics"]
    assert metrics["queries"] == 6 and 0 <= metrics["mIoU"] <= 1 and 0 <= metrics["mIoU_point"] <= 1
    assert {"mIoU/square", "mIoU/disc", "mIoU/bar"} <= set(metrics)

    mask = np.zeros((Image.open(image).height, Image.open(image).width), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "coco" / "m.png")
    (tmp_path / "pairs.json").write_text(
        json.dumps([{"image": "val2017/000000000101.jpg", "phrase": "a square", "mask": "m.png"}])
    )
    pairs = load_config(config, None, [f"pairs={tmp_path / 'pairs.json'}"])
    result = run_benchmark(TextBenchmark("coco-text", pairs, tmp_path / "coco"), tmp_path / "bench2", progress=False)
    assert result["metrics"]["queries"] == 1 and "mIoU/square" not in result["metrics"]


def test_pair_images_keep_their_ids_when_entries_are_added(tmp_path):
    import json

    from PIL import Image

    from samtasks.evaluation.text import read_pairs

    for name in "abc":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{name}.png")
    entries = [{"image": f"{name}.png", "phrase": name, "mask": "m.png"} for name in "ac"]
    (tmp_path / "pairs.json").write_text(json.dumps(entries))
    before = {s.image_id: s.path for s in read_pairs(tmp_path / "pairs.json", tmp_path)}
    entries.insert(1, {"image": "b.png", "phrase": "b", "mask": "m.png"})
    (tmp_path / "pairs.json").write_text(json.dumps(entries))
    after = {s.image_id: s.path for s in read_pairs(tmp_path / "pairs.json", tmp_path)}
    assert len(after) == 3 and {k: after[k] for k in before} == before


def test_clip_errors_name_model_and_tag():
    pytest.importorskip("open_clip")
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        OpenClipEncoder("ViT-Q-99", None)
    with pytest.raises(ValueError, match="no pretrained tag 'nope' for ViT-B-32"):
        OpenClipEncoder("ViT-B-32", "nope")


def test_offline_clip_names_the_flag(monkeypatch):
    open_clip = pytest.importorskip("open_clip")

    def offline(*args, **kwargs):
        raise RuntimeError("couldn't connect to huggingface.co")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    with pytest.raises(ValueError, match="pass its path with --clip-pretrained PATH"):
        OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k")
