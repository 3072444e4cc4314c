"""The `edges-reference` preset: each switch where it differs from the paper's recipe on a hand-made case,
its orientation and NMS against OpenCV's `computeOrientation` and `edgesNms`, and the whole preset against
an independent implementation of the re-implementation's pipeline on a BSDS image with the same masks.

The OpenCV oracle runs `opencv_reference.py` under `$SAMTASKS_OPENCV_PYTHON`, an interpreter with
opencv-contrib-python-headless (`make test` builds one in `.venv/opencv-contrib`); without it those tests
are skipped."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from samtasks import SamPredictor, build_sam
from samtasks.evaluation import load_config
from samtasks.evaluation.edges import EdgesBenchConfig
from samtasks.structures import EdgeMap
from samtasks.tasks import edges as E
from samtasks.utils.image import load_image, save_edge_map

ROOT = Path(__file__).resolve().parents[1]
BSDS_IMAGE = ROOT / "tests" / "golden" / "bsds500-bench" / "images" / "2018.jpg"


@pytest.fixture(scope="module")
def opencv_reference(tmp_path_factory):
    """`run(edges) -> {blurred, orientation, nms, png}`: the re-implementation's steps after normalization,
    computed by OpenCV-contrib in its own interpreter."""
    python = os.environ.get("SAMTASKS_OPENCV_PYTHON")
    if not python:
        pytest.skip("SAMTASKS_OPENCV_PYTHON (an interpreter with opencv-contrib) is not set; `make test` sets it")
    folder = tmp_path_factory.mktemp("opencv")

    def run(edges: np.ndarray) -> dict[str, np.ndarray]:
        source, target = folder / "in.npz", folder / "out.npz"
        np.savez(source, edges=edges.astype(np.float32))
        script = Path(__file__).with_name("opencv_reference.py")
        subprocess.run([python, str(script), str(source), str(target)], check=True, capture_output=True)
        with np.load(target) as out:
            return dict(out)

    return run


def _angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| between undirected orientations (mod pi), radians."""
    d = np.abs(a - b) % np.pi
    return np.minimum(d, np.pi - d)


# --- each switch on a hand-made case --------------------------------------------------------------------


def test_zero_padding_makes_the_image_frame_an_edge():
    p = 1 / (1 + math.exp(-2.0))  # a constant probability map
    logits = torch.full((1, 6, 7), 2.0)
    assert E.mask_edges(logits, gate=False).max() < 1e-6  # replicate: flat everywhere (to float rounding)
    zeros = E.mask_edges(logits, padding="zeros", gate=False)[0]
    assert zeros[1:-1, 1:-1].max() < 1e-6
    # Along a side the Sobel sees [1 2 1] p against 0: 4p; at a corner 3p in x and in y.
    torch.testing.assert_close(zeros[0, 1:-1], torch.full((5,), 4 * p))
    torch.testing.assert_close(zeros[0, 0], torch.tensor(3 * math.sqrt(2) * p))


def test_sobel_gate_keeps_both_sides_and_with_zero_padding_the_frame():
    logits = torch.full((1, 20, 30), -5.0)
    logits[0, :, :15] = 5.0  # the left half
    boundary = torch.zeros(20, 30, dtype=torch.bool)
    boundary[:, 14:16] = True  # the mask's last column and the first column outside
    outer = E.mask_edges(logits)[0] > 0
    assert (outer == (boundary & (torch.arange(30) >= 15))).all()
    sobel = E.mask_edges(logits, gate_ring="sobel")[0] > 0
    assert (sobel == boundary).all()
    frame = boundary.clone()
    frame[[0, -1], :15] = True
    frame[:, 0] = True
    framed = E.mask_edges(logits, padding="zeros", gate_ring="sobel")[0] > 0
    assert (framed == frame).all()  # the mask's pixels on the image frame join its boundary


def test_min_max_normalization():
    edges = np.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_array_equal(E.normalize(edges), edges / 5)
    np.testing.assert_array_equal(E.normalize(edges, "min-max"), (edges - 1) / 4)
    with_zero = np.array([[0.0, 0.3], [0.7, 0.9]])
    np.testing.assert_array_equal(E.normalize(with_zero, "min-max"), E.normalize(with_zero))  # bit for bit
    np.testing.assert_array_equal(E.normalize(np.full((2, 2), 3.0), "min-max"), np.zeros((2, 2)))


def test_reflect_101_border_of_the_smoothing():
    x = np.zeros((5, 5))
    x[0, 0] = 16.0
    # [1 2 1] / 4 per axis at the corner: symmetric padding repeats the 16 (12, then 9); reflect-101
    # mirrors the 0 next to it (8, then 4).
    assert E.conv_tri(x, 1)[0, 0] == 9.0
    assert E.conv_tri(x, 1, border="reflect-101")[0, 0] == 4.0
    np.testing.assert_array_equal(E.conv_tri(x, 1)[1:-1, 1:-1], E.conv_tri(x, 1, border="reflect-101")[1:-1, 1:-1])


@pytest.mark.parametrize("recipe", ["toolbox", "opencv"])
@pytest.mark.parametrize("normal", [0.4, 2.5])
def test_both_orientation_recipes_on_a_tilted_ridge(recipe, normal):
    yy, xx = np.mgrid[0:48, 0:64]
    distance = (xx - 32) * math.cos(normal) + (yy - 24) * math.sin(normal)
    ridge = np.exp(-(distance**2) / 8)
    orientation = E.edge_orientation(ridge, recipe)
    near = (np.abs(distance) < 1.5) & (yy > 8) & (yy < 40) & (xx > 8) & (xx < 56)
    # A ridge f(d) has Oxx = f'' cos^2, Oyy = f'' sin^2, Oxy = f'' cos sin: the shared formula gives
    # atan(tan^2) of the normal, mirrored when cos sin < 0; both recipes estimate it.
    expected = math.atan(math.tan(normal) ** 2) * (1 if math.cos(normal) * math.sin(normal) > 0 else -1)
    assert _angle_difference(orientation[near], expected).max() < 0.02


def test_nms_radius_border_and_multiplier():
    profile = np.zeros(20)
    profile[:9] = [0.0, 1.0, 0.5, 0.95, 0.0, 0.2, 0.995, 1.0, 0.1]
    edges = np.tile(profile, (12, 1))  # a vertical structure: the normal is x (orientation 0)
    flat = np.zeros_like(edges)

    def row(radius: int, border: int, multiplier: float) -> np.ndarray:
        return E.edge_nms(edges, flat, radius=radius, border=border, multiplier=multiplier)[6]

    assert np.flatnonzero(row(1, 0, 1.0)).tolist() == [1, 3, 7]  # local maxima along x
    assert np.flatnonzero(row(2, 0, 1.0)).tolist() == [1, 7]  # 0.95 has 1.0 two pixels away
    assert np.flatnonzero(row(1, 0, 1.01)).tolist() == [1, 3, 6, 7]  # 0.995 * 1.01 >= 1.0
    faded = row(1, 5, 1.0)
    assert faded[1] == pytest.approx(0.2) and faded[7] == 1.0  # column 1 of a 5-pixel fade
    assert not E.edge_nms(edges, flat, radius=1, border=5, multiplier=1.0)[0].any()


def test_floor_quantization(tmp_path):
    edges = np.array([[0.5, 1.0, 0.999, 0.004]])
    for quantize, levels in [("round", [128, 255, 255, 1]), ("floor", [127, 255, 254, 1])]:
        path = EdgeMap(edges, 1, quantize=quantize).save(tmp_path / f"{quantize}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(path)), [levels])
    with pytest.raises(ValueError, match="quantize must be one of"):
        save_edge_map(tmp_path / "x.png", edges, quantize="ceil")


# --- presets and configs --------------------------------------------------------------------------------


def test_presets():
    assert E.PRESETS["edges-paper"] == E.EdgeSettings()
    ref = E.PRESETS["edges-reference"]
    assert ref.amg_settings().batch_nms_thresh == 0.7 and ref.amg_settings().points_per_side == 16
    assert (ref.edge_nms_radius, ref.edge_nms_border, ref.edge_nms_multiplier) == (2, 0, 1.0)
    with pytest.raises(ValueError, match="unknown EdgeSettings preset 'edges-bsds'"):
        E.EdgeDetector.from_preset(None, "edges-bsds")
    with pytest.raises(ValueError, match="orientation must be one of"):
        E.EdgeSettings(orientation="matlab")


def test_reference_config_and_its_documented_overrides_are_the_preset():
    path = ROOT / "configs" / "edges_reference_bsds.yaml"
    expected = EdgesBenchConfig(task=E.PRESETS["edges-reference"])
    assert load_config(EdgesBenchConfig(), path) == expected
    overrides = re.findall(r"--set (task\.\S+)", path.read_text())
    assert len(overrides) == 10 and load_config(EdgesBenchConfig(), None, overrides) == expected


# --- against OpenCV ------------------------------------------------------------------------------------


def test_reference_smoothing_orientation_and_nms_equal_opencv(opencv_reference):
    rng = np.random.default_rng(0)
    for shape, sparse in [((37, 53), False), ((64, 48), True), ((9, 8), False)]:
        x = rng.random(shape) ** 3 if sparse else gaussian_filter(rng.random(shape), 2)
        if sparse:
            x[rng.random(shape) < 0.3] = 0
        x = ((x - x.min()) / np.ptp(x)).astype(np.float32)
        cv = opencv_reference(x)
        np.testing.assert_allclose(E.conv_tri(x, 1, border="reflect-101"), cv["blurred"], rtol=0, atol=2e-7)
        blurred = cv["blurred"].astype(np.float64)
        # OpenCV computes in float32: its angles are ours to a few 1e-4 rad; the toolbox recipe's are not.
        assert _angle_difference(E.edge_orientation(blurred, "opencv"), cv["orientation"]).max() < 1e-3
        assert (_angle_difference(E.edge_orientation(blurred), cv["orientation"]) > math.pi / 8).mean() > 0.02
        ours = E.edge_nms(blurred, cv["orientation"], radius=2, border=0, multiplier=1.0)
        np.testing.assert_array_equal(ours.astype(np.float32), cv["nms"])
        assert 0.05 < (ours > 0).mean() < 0.5


def _reference_normalized_map(logits: torch.Tensor) -> np.ndarray:
    """The re-implementation's map before blurring, from its rules: each mask's sigmoid Sobel-filtered
    with zero padding (two convolutions), kept where the binary mask's Sobel is non-zero, the max over
    masks, then min-max normalization, all in float32."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
    ky = kx.transpose(2, 3)
    top = torch.zeros(logits.shape[1:])
    for chunk in logits.split(16):
        prob, mask = torch.sigmoid(chunk)[:, None], (chunk > 0).float()[:, None]
        magnitude = torch.sqrt(F.conv2d(prob, kx, padding=1) ** 2 + F.conv2d(prob, ky, padding=1) ** 2)
        ring = torch.sqrt(F.conv2d(mask, kx, padding=1) ** 2 + F.conv2d(mask, ky, padding=1) ** 2) > 0
        top = torch.maximum(top, (magnitude * ring).amax(0)[0])
    edges = top.numpy()
    return (edges - edges.min()) / (edges.max() - edges.min())


def test_reference_preset_reproduces_the_reimplementation_on_a_bsds_image(
    tiny_checkpoint, opencv_reference, tmp_path, monkeypatch
):
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    # Random weights give masks that all span the image, which NMS would merge into one: it is off here
    # (the staging has its own test), so the 4x4 grid's 48 masks all reach the edge map.
    amg = {"points_per_side": 4, "box_nms_thresh": 1.0, "batch_nms_thresh": 1.0}
    detector = E.EdgeDetector.from_preset(predictor, "edges-reference", amg=amg)
    generate, kept = detector.generator.generate, []
    monkeypatch.setattr(detector.generator, "generate", lambda image: kept.append(generate(image)) or kept[-1])
    result = detector.detect(load_image(BSDS_IMAGE))
    ours = np.asarray(Image.open(result.save(tmp_path / "ours.png")))

    masks = kept[0]
    predictor.set_image(load_image(BSDS_IMAGE))  # the generator resets it
    logits = predictor.upsample(torch.from_numpy(masks.low_res_logits)[:, None])[:, 0]
    predictor.reset_image()
    reference = opencv_reference(_reference_normalized_map(logits))
    assert len(masks) == 48 and ours.shape == reference["png"].shape == (481, 321)
    assert (reference["png"] > 0).mean() > 0.05
    # Equal up to float ties: OpenCV computes in float32, we in float64.
    assert np.count_nonzero(ours != reference["png"]) <= ours.size // 10_000

    paper = E.EdgeDetector.from_preset(predictor, "edges-paper", amg=amg)
    monkeypatch.setattr(paper.generator, "generate", lambda image: masks)
    paper_png = np.asarray(Image.open(paper.detect(BSDS_IMAGE).save(tmp_path / "paper.png")))
    assert (paper_png != reference["png"]).mean() > 0.1  # the paper's recipe on the same masks
