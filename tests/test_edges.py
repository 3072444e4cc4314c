"""Edge detection: the filtering steps on hand-made masks, the NMS against pyedgeeval, the adapter on the
tiny model, the PNG format, and the `edges`, `eval-edges` and `bench bsds-edges` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samtasks import SamPredictor, build_sam
from samtasks.cli import main
from samtasks.metrics.bsds import load_prediction
from samtasks.structures import GeneratedMasks
from samtasks.tasks import edges as E
from samtasks.utils.image import save_edge_map
from samtasks.utils.masks import encode_rle, masks_to_boxes

from .conftest import random_image

GOLDEN = Path(__file__).parent / "golden" / "bsds500-bench"


def _disc_logits(h=40, w=50, cy=20, cx=25, r=10.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (r - torch.hypot((yy - cy).float(), (xx - cx).float())) * 2.0  # > 0 inside the disc


def test_gate_keeps_only_the_outer_boundary_ring():
    logits = _disc_logits()[None]
    inside = logits[0] > 0
    ring = torch.nn.functional.max_pool2d(inside.float()[None, None], 3, 1, 1)[0, 0].bool() & ~inside
    gated = E.mask_edges(logits)[0]
    assert ((gated > 0) == ring).all()  # the probability changes across the ring, so Sobel is > 0 on it
    ungated = E.mask_edges(logits, gate=False)[0]
    assert (ungated[ring] == gated[ring]).all()
    assert (ungated[inside] > 0).any() and (gated[inside] == 0).all()


def test_nms_equals_pyedgeeval_on_random_maps():
    pe = pytest.importorskip("pyEdgeEval")
    toolbox = pytest.importorskip("pyEdgeEval.preprocess.nms.toolbox")
    rng = np.random.default_rng(0)
    for shape in [(37, 53), (120, 90), (9, 8)]:
        x = rng.random(shape) ** 3
        x[rng.random(shape) < 0.3] = 0
        for r in (1.0, 4):
            np.testing.assert_allclose(E.conv_tri(x, r), toolbox.conv_tri(x, int(r)), rtol=0, atol=1e-14)
        o = E.edge_orientation(x)
        for radius, border, m in [(1, 5, 1.01), (2, 3, 1.0)]:
            ours = E.edge_nms(x, o, radius=radius, border=border, multiplier=m)
            np.testing.assert_array_equal(ours, pe.nms(x, o, r=radius, s=border, m=m))


def test_nms_thins_a_blurred_line_to_its_ridge():
    yy, xx = np.mgrid[0:40, 0:60]
    distance = (yy - 0.3 * xx - 10) / np.hypot(1, 0.3)  # a tilted line
    x = np.exp(-(distance**2) / 4)
    out = E.edge_nms(x, E.edge_orientation(x))
    inner = out[:, 6:54]
    assert (inner.max(0) > 0).all()  # the ridge survives in every column
    assert (np.abs(distance[:, 6:54][inner > 0]) < 1).all()  # and only pixels next to it
    assert (inner > 0).sum(0).max() <= 2
    assert not out[:, 0].any() and not out[0].any()  # the border fades to 0


def test_conv_tri_keeps_constants_and_mass():
    x = np.full((10, 12), 0.5)
    np.testing.assert_allclose(E.conv_tri(x, 4), x)
    y = np.zeros((21, 21))
    y[10, 10] = 1
    assert E.conv_tri(y, 1).sum() == pytest.approx(1.0)
    assert E.conv_tri(y, 1)[10, 10] == pytest.approx(0.25)  # [1 2 1] / 4 per axis


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return SamPredictor(build_sam("tiny", tiny_checkpoint))


FEW_MASKS = {"points_per_side": 4, "box_nms_thresh": 1.0}  # random weights: keep the overlapping masks


def _detect_keeping_masks(detector: E.EdgeDetector, image: np.ndarray, monkeypatch) -> tuple:
    """(edge map, the generator's masks it was made from)."""
    generate, kept = detector.generator.generate, []
    monkeypatch.setattr(detector.generator, "generate", lambda im: kept.append(generate(im)) or kept[-1])
    result = detector.detect(image)
    return result, kept[0]


@pytest.mark.parametrize(
    "settings",
    [
        E.EdgeSettings(amg=FEW_MASKS),
        E.EdgeSettings(gate=False, reduce="mean", suppression="thin", amg=FEW_MASKS),
    ],
    ids=["paper", "ungated mean thinned"],
)
def test_detector_contract(predictor, settings, monkeypatch):
    """The map is each mask's logits upsampled as the predictor does, filtered, reduced over masks,
    normalized and suppressed, composed from the public steps (no crops: the predictor's frame)."""
    image = random_image(np.random.default_rng(2), 50, 70)
    result, masks = _detect_keeping_masks(E.EdgeDetector(predictor, settings), image, monkeypatch)
    assert result.edges.shape == (50, 70) and result.edges.dtype == np.float32
    assert result.num_masks == len(masks) > 1
    predictor.set_image(image)  # the generator resets it
    logits = predictor.upsample(torch.from_numpy(masks.low_res_logits)[:, None])[:, 0]  # [N, 50, 70]
    predictor.reset_image()
    response = E.mask_edges(logits, padding=settings.sobel_padding, gate=settings.gate)
    if settings.reduce == "max":
        combined = response.amax(0).numpy().astype(np.float64)
    else:
        combined = response.sum(0).numpy().astype(np.float64) / len(masks)
    expected = E.suppress(E.normalize(combined, settings.normalize), settings)
    assert np.count_nonzero(expected) > 10
    np.testing.assert_allclose(result.edges, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "settings",
    [
        E.EdgeSettings(amg=FEW_MASKS),
        E.EdgeSettings(smooth_radius=3, edge_nms_border=8, amg=FEW_MASKS),
    ],
)
def test_bands_of_rows_give_the_same_map(predictor, settings, monkeypatch):
    """Large photos are filtered one mask and a band of rows at a time (the NMS too); same map."""
    image = random_image(np.random.default_rng(2), 300, 70)
    whole = E.EdgeDetector(predictor, settings).detect(image)
    monkeypatch.setattr(E, "CHUNK_PIXELS", 70 * 40)  # Sobel bands of 5 rows, NMS bands of 4 x its halo
    banded = E.EdgeDetector(predictor, settings).detect(image)
    assert whole.num_masks > 1 and whole.edges.max() > 0
    np.testing.assert_array_equal(banded.edges, whole.edges)


def test_edges_lie_on_the_kept_masks_outer_rings(predictor, monkeypatch):
    image = random_image(np.random.default_rng(3), 50, 70)
    detector = E.EdgeDetector(predictor, E.EdgeSettings(suppression="none", amg=FEW_MASKS))
    result, masks = _detect_keeping_masks(detector, image, monkeypatch)
    inside = torch.from_numpy(masks.masks())  # bool [N, 50, 70], the generator's masks
    rings = (torch.nn.functional.max_pool2d(inside.float()[:, None], 3, 1, 1)[:, 0].bool() & ~inside).numpy()
    on = result.edges > 0
    assert result.edges.max() == pytest.approx(1.0)  # normalized
    assert not on[~rings.any(0)].any() and on[rings.any(0)].mean() > 0.9


def test_a_crops_mask_is_filtered_in_its_place_in_the_image(predictor, monkeypatch):
    """A mask from a crop (random weights give none: the generator's crop-edge rule drops masks spanning
    their crop) has its low-res logits in the crop's frame: upsampled to the crop and put at its box."""
    h, w, (x0, y0, x1, y1) = 50, 70, (30, 12, 70, 42)  # a 40 x 30 crop at the right border
    side = predictor.mask_input_size[0]
    yy, xx = np.mgrid[0:side, 0:side]
    low = np.stack(
        [
            8.0 - np.hypot(yy - 16, xx - 16),  # the whole image's frame: a disc at the centre
            6.0 - np.hypot(yy - 12, xx - 12),  # the crop's frame (it fills 32 x 24 of the 32 x 32 logits)
        ]
    ).astype(np.float32)
    crops = np.array([[0, 0, w, h], [x0, y0, x1, y1]])
    full = []
    for (a, b, c, d), logits in zip(crops, low, strict=True):  # each mask upsampled in its frame and placed
        predictor.set_image(np.zeros((d - b, c - a, 3), np.uint8))
        frame = torch.full((h, w), -20.0)
        frame[b:d, a:c] = predictor.upsample(torch.from_numpy(logits)[None, None])[0, 0]
        full.append(frame)
    predictor.reset_image()
    full = torch.stack(full)  # [2, 50, 70]
    inside = (full > 0).numpy()
    assert inside[1].any() and not inside[1][:, :x0].any()  # the crop's disc lies inside the crop
    generated = GeneratedMasks(
        image_size=(h, w),
        rles=encode_rle(inside),
        boxes=masks_to_boxes(torch.from_numpy(inside)).numpy(),
        predicted_iou=np.ones(2, np.float32),
        stability_score=np.ones(2, np.float32),
        points=np.zeros((2, 2), np.float32),
        crop_boxes=crops,
        low_res_logits=low,
    )
    detector = E.EdgeDetector(predictor, E.EdgeSettings(suppression="none"))
    monkeypatch.setattr(detector.generator, "generate", lambda image: generated)
    result = detector.detect(np.zeros((h, w, 3), np.uint8))
    expected = E.normalize(E.mask_edges(full).amax(0).numpy().astype(np.float64))
    np.testing.assert_allclose(result.edges, expected, rtol=0, atol=1e-6)
    ring = torch.nn.functional.max_pool2d(torch.from_numpy(inside[1:]).float()[None], 3, 1, 1)[0, 0].numpy() > 0
    assert (result.edges[ring & ~inside[1]] > 0).mean() > 0.9  # the crop's mask has its edges


def test_settings_validation():
    with pytest.raises(ValueError, match="reduce must be one of"):
        E.EdgeSettings(reduce="median")
    with pytest.raises(ValueError, match="suppression must be one of"):
        E.EdgeSettings(suppression="canny")
    with pytest.raises(ValueError, match=r"unknown AmgSettings field\(s\) points \(known: points_per_side"):
        E.EdgeSettings(amg={"points": 3})
    with pytest.raises(ValueError, match="unknown AmgSettings preset 'nope'"):
        E.EdgeSettings(amg_preset="nope")


def test_png_round_trip(tmp_path):
    edges = np.random.default_rng(0).random((7, 9))
    path = save_edge_map(tmp_path / "sub" / "m.png", edges)
    with Image.open(path) as image:
        assert image.mode == "L"
    np.testing.assert_allclose(load_prediction(path), np.round(edges * 255) / 255)
    with pytest.raises(ValueError, match="finite"):
        save_edge_map(tmp_path / "x.png", np.full((2, 2), np.nan))


# --- commands ----------------------------------------------------------------------------------------


def test_edges_command(tmp_path, tiny_checkpoint, capsys, caplog):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(random_image(np.random.default_rng(i), 40, 56)).save(images / f"im{i}.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    args = ["edges", str(images), "--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "-q"]
    out = tmp_path / "out"
    assert main([*args, "--set", "points_per_side=4", "--out", str(out)]) == 1  # the broken file
    assert "broken.jpg" in caplog.text
    maps = sorted(p.name for p in out.glob("*.png"))
    assert maps == ["im0.png.png", "im1.png.png"]
    assert load_prediction(out / "im0.png.png").shape == (40, 56)
    assert main([*args, "--set", "colour=red", "--out", str(out)]) == 2
    assert "unknown knob(s) colour" in capsys.readouterr().err
    reference = tmp_path / "reference"
    preset = ["--preset", "edges-reference", "--set", "points_per_side=4", "--out", str(reference)]
    assert main([*args, *preset]) == 1
    detector = E.EdgeDetector.from_preset(  # --set merges into the preset's AMG knobs
        SamPredictor(build_sam("tiny", tiny_checkpoint)), "edges-reference", amg={"points_per_side": 4}
    )
    expected = detector.detect(images / "im1.png").save(tmp_path / "expected.png")
    np.testing.assert_array_equal(load_prediction(reference / "im1.png.png"), load_prediction(expected))
    assert main([*args, "--preset", "edges-bsds", "--out", str(out)]) == 2
    assert "--preset must be one of edges-paper, edges-reference" in capsys.readouterr().err


def test_eval_edges_command(tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval-edges", "--pred", str(GOLDEN / "png"), "--gt", str(GOLDEN / "groundTruth"), "--thresholds", "5"]
    assert main([*args, "--workers", "1", "--out", str(out), "-q"]) == 0
    assert "ODS 0.70" in capsys.readouterr().out
    ods = np.loadtxt(out / "eval_bdry.txt")
    np.testing.assert_allclose(ods, np.loadtxt(GOLDEN / "official" / "eval_bdry.txt"), atol=0.002)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(GOLDEN / "png" / "2018.png", partial)
    bad = ["eval-edges", "--pred", str(partial), "--gt", str(GOLDEN / "groundTruth"), "--out", str(out)]
    assert main(bad) == 1
    assert "no prediction for 3063" in capsys.readouterr().err
    assert main([*args, "--max-dist", "3", "--out", str(out)]) == 2
    assert main([*args, "--limit", "-1", "--out", str(out)]) == 2


def test_eval_edges_finds_the_ground_truth_under_a_bsds_root(tmp_path, capsys):
    (tmp_path / "root" / "groundTruth").mkdir(parents=True)
    shutil.copytree(GOLDEN / "groundTruth", tmp_path / "root" / "groundTruth" / "test")
    args = ["eval-edges", "--pred", str(GOLDEN / "png"), "--thresholds", "5", "--limit", "1", "--workers", "1", "-q"]
    assert main([*args, "--gt", str(GOLDEN / "groundTruth"), "--out", str(tmp_path / "direct")]) == 0
    direct = capsys.readouterr().out
    assert main([*args, "--gt", str(tmp_path / "root"), "--out", str(tmp_path / "root_eval")]) == 0
    assert capsys.readouterr().out.split("(")[0] == direct.split("(")[0] and "ODS" in direct


def test_eval_edges_limit_naming_and_bad_maps(tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    shutil.copy(GOLDEN / "png" / "3063.png", maps / "3063.jpg.png")  # as `samtasks edges` names it
    args = ["eval-edges", "--pred", str(maps), "--gt", str(GOLDEN / "groundTruth"), "--thresholds", "5", "-q"]
    args += ["--workers", "1", "--out", str(tmp_path / "eval")]
    assert main([*args, "--limit", "1"]) == 0  # the first id that has a map, not the first id
    assert "(1 images;" in capsys.readouterr().out
    assert [line.split()[-1] for line in (tmp_path / "eval" / "images.txt").read_text().splitlines()] == ["3063"]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(maps / "3063.jpg.png")
    assert main([*args, "--limit", "1"]) == 1
    assert f"{maps / '3063.jpg.png'} against" in capsys.readouterr().err
    np.save(maps / "3063.npy", np.full((10, 12), np.nan))
    assert main([*args, "--limit", "1"]) == 1
    assert f"prediction {maps / '3063.npy'} must be a finite" in capsys.readouterr().err


def test_bench_bsds_edges_runs_and_resumes(tmp_path, tiny_checkpoint):
    out = tmp_path / "run"
    args = [
        "bench",
        "bsds-edges",
        "--data",
        str(GOLDEN),
        "--set",
        "model.name=tiny",
        "--set",
        f"model.checkpoint={tiny_checkpoint}",
        "--set",
        "task.amg.points_per_side=4",
        "--set",
        "evaluation.n_thresholds=9",
        "--out",
        str(out),
        "-q",
    ]
    assert main([*args, "--limit", "1"]) == 0
    assert main([*args, "--limit", "2"]) == 0  # resumes: only the second image is new
    records = [json.loads(line) for line in (out / "records" / "rank0.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in records] == ["2018", "3063"]
    assert len(records[0]["counts"]["cnt_r"]) == 9
    result = json.loads((out / "results.json").read_text())
    assert result["images"] == 2 and 0 <= result["metrics"]["ODS"] <= 1
    assert (out / "maps" / "3063.png").is_file() and (out / "eval" / "eval_bdry_thr.txt").is_file()
    assert len(np.loadtxt(out / "eval" / "eval_bdry_img.txt").reshape(-1, 5)) == 2
    assert main(args) == 1  # the sample lacks the other three images: reported, and the exit status says so
    assert len(json.loads((out / "results.json").read_text())["failed"]) == 3
    reference = tmp_path / "reference"
    config = Path(__file__).resolve().parents[1] / "configs" / "edges_reference_bsds.yaml"
    assert main([*args[:-3], "--config", str(config), "--out", str(reference), "-q", "--limit", "1"]) == 0
    resolved = json.loads((reference / "results.json").read_text())["config"]["task"]
    assert resolved["orientation"] == "opencv" and resolved["amg"] == {"batch_nms_thresh": 0.7, "points_per_side": 4}
