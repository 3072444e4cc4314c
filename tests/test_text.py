"""Text to mask: the crop recipe, the ranking with a constructed encoder, candidate reuse, errors, and
the pipeline end to end with open_clip's real tokenizer and random weights."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from samtasks import SamPredictor, build_sam
from samtasks.cli import main
from samtasks.evaluation import run_benchmark
from samtasks.evaluation.config import DataConfig
from samtasks.evaluation.text import TextBenchConfig, TextBenchmark
from samtasks.structures import GeneratedMasks, TextResult
from samtasks.tasks.text import TEMPLATES, OpenClipEncoder, TextSegmenter, TextSettings, mask_crop
from samtasks.utils.masks import decode_rle, encode_rle, masks_to_boxes

from .conftest import random_image
from .synthetic import write_dataset

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


def test_open_clip_encoder_equals_open_clips_pipeline_and_ranks_by_it(tiny_checkpoint, rng):
    """Candidates' crops through our encoder (two batches) equal open_clip's own eval preprocessing and
    image tower; the answer is the candidate nearest the template ensemble's mean text embedding."""
    open_clip = pytest.importorskip("open_clip")
    encoder = OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu", batch_size=2)
    assert encoder.input_size == 224
    amg = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    seg = TextSegmenter.from_preset(predictor, "text-clip", encoder=encoder, amg=amg)
    image = random_image(rng, 48, 64)
    found = seg.candidates(image)
    assert len(found.masks) > 2
    preprocess = open_clip.image_transform(224, is_train=False, mean=encoder.mean, std=encoder.std)
    masks = found.masks.masks()
    crops = [mask_crop(image, m, b, 224, encoder.mean) for m, b in zip(masks, found.masks.boxes, strict=True)]
    tokens = open_clip.get_tokenizer("ViT-B-32")([t.format("a wheel") for t in TEMPLATES])
    with torch.inference_mode():
        images = F.normalize(encoder.model.encode_image(torch.stack([preprocess(Image.fromarray(c)) for c in crops])))
        text = F.normalize(F.normalize(encoder.model.encode_text(tokens)).mean(0), dim=0)
    torch.testing.assert_close(found.features, images, atol=1e-4, rtol=0)
    result = seg.query(image, "a wheel")
    similarity = (images @ text).numpy()
    assert result.index == int(np.argmax(similarity)) and np.array_equal(result.mask, masks[result.index])
    np.testing.assert_allclose([r["similarity"] for r in result.ranking], np.sort(similarity)[::-1], atol=1e-4)


def test_text_command(tmp_path, tiny_checkpoint):
    pytest.importorskip("open_clip")
    write_dataset(tmp_path / "coco", 1, large=False)
    image = tmp_path / "coco" / "val2017" / "000000000100.jpg"
    model = ["--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint)]
    model += ["--clip-pretrained", "none", "--clip-model", "ViT-S-32-alt"]
    argv = ["text", str(image), "--prompt", "a square", "--prompt", "a disc", "--point", "40,30", *model]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "000000000100.jpg_text.json").read_text())
    assert [q["prompt"] for q in report["queries"]] == ["a square", "a disc"]
    assert main(["text", str(image), "--prompt", " ", *model]) == 2


class _ScriptedSegmenter:
    """Answers each phrase with a fixed mask of the image (`answers[(H, W)][phrase]`, None: no candidate)
    and, re-prompted with a point, with `fixed[(H, W)][phrase]` when the point is `points[...]`."""

    def __init__(self, answers: dict, fixed: dict, points: dict):
        self.answers, self.fixed, self.points = answers, fixed, points

    def query(self, image, prompt, *, point=None, all=False):
        size = image.shape[:2]
        if point is None:
            mask = self.answers[size][prompt]
        else:
            mask = self.fixed[size][prompt] if tuple(point) == self.points[size][prompt] else None
        return TextResult(prompt, mask, 1.0, 0 if mask is not None else -1, [], [], point)


def _scripted_run(benchmark: TextBenchmark, segmenter: _ScriptedSegmenter, out: Path) -> dict:
    benchmark.setup = lambda device: setattr(benchmark, "segmenter", segmenter)
    return run_benchmark(benchmark, out, progress=False)["metrics"]


def test_coco_text_benchmark_hand_computed(tmp_path):
    """Per image: the square answered exactly (IoU 1), no disc (0), the top 2 of the bar's 5 rows (0.4).
    The point fix clicks the centre of the object (the answer overlaps it, or it is the only one of
    its category) and then gets the object (IoU 1)."""
    ann = write_dataset(tmp_path / "coco", 2, large=False)
    data = json.loads(ann.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    sizes = {i["id"]: (i["height"], i["width"]) for i in data["images"]}
    assert len(set(sizes.values())) == 2
    answers, fixed, points = {}, {}, {}
    for a in data["annotations"]:
        size, name = sizes[a["image_id"]], names[a["category_id"]]
        mask = decode_rle(a["segmentation"]).astype(bool)
        x, y, w, h = a["bbox"]
        # The pixel farthest from the boundary: a square's or disc's centre; on the bar's 5 rows every
        # pixel of the middle row 3 or more from its ends ties, and the first is taken.
        points.setdefault(size, {})[name] = (x + 2, y + 2) if name == "bar" else (x + (w - 1) // 2, y + (h - 1) // 2)
        fixed.setdefault(size, {})[name] = mask
        answer = {"square": mask, "disc": None}.get(name)
        if name == "bar":  # its top 2 rows of 5
            answer = mask.copy()
            answer[y + 2 :] = False
        answers.setdefault(size, {})[name] = answer
    config = TextBenchConfig(data=DataConfig(annotations="annotations.json", images="val2017"))
    segmenter = _ScriptedSegmenter(answers, fixed, points)
    metrics = _scripted_run(TextBenchmark("coco-text", config, tmp_path / "coco"), segmenter, tmp_path / "a")
    assert metrics["queries"] == 6
    assert metrics["mIoU"] == pytest.approx((1 + 0 + 0.4) * 2 / 6)
    assert metrics["mIoU_point"] == 1.0
    assert (metrics["mIoU/square"], metrics["mIoU/disc"]) == (1.0, 0.0)
    assert metrics["mIoU/bar"] == pytest.approx(0.4)

    # User pairs: one 20 x 20 target; the answer is its left half (IoU 0.5), the fix the whole of it.
    image = tmp_path / "coco" / "val2017" / "000000000100.jpg"
    target = np.zeros(sizes[100], bool)
    target[10:30, 10:30] = True
    Image.fromarray(target.astype(np.uint8) * 255).save(tmp_path / "coco" / "m.png")
    (tmp_path / "pairs.json").write_text(
        json.dumps([{"image": "val2017/000000000100.jpg", "phrase": "a square", "mask": "m.png"}])
    )
    half = target.copy()
    half[:, 20:] = False
    segmenter = _ScriptedSegmenter(
        {sizes[100]: {"a square": half}}, {sizes[100]: {"a square": target}}, {sizes[100]: {"a square": (19, 19)}}
    )
    pairs = dataclasses.replace(config, pairs=str(tmp_path / "pairs.json"))
    metrics = _scripted_run(TextBenchmark("coco-text", pairs, tmp_path / "coco"), segmenter, tmp_path / "b")
    assert image.is_file() and metrics == {"queries": 1, "mIoU": 0.5, "mIoU_point": 1.0}


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


def test_offline_clip_fails_at_once_naming_the_flag(monkeypatch, tmp_path):
    """An unreachable hub and an empty cache: one probe, then the error, not the hub client's retries."""
    pytest.importorskip("open_clip")
    constants = pytest.importorskip("huggingface_hub.constants")
    server = socket.create_server(("127.0.0.1", 0))  # accepts, then hangs up: no HTTP answer
    connections = []

    def hang_up():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        with pytest.raises(ValueError, match="pass its path with --clip-pretrained PATH") as err:
            OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    finally:
        server.close()
    assert f"{endpoint}/laion/CLIP-ViT-B-32-laion2B-s34B-b79K cannot be reached" in str(err.value)
    assert len(connections) == 1
    assert constants.HF_HUB_OFFLINE is False
