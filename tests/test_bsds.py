"""The BSDS boundary benchmark: thinning, matching, counts and summaries on hand-made cases, the
official sample's published numbers, the input formats, and pyedgeeval as an oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from samtasks.data import DatasetError
from samtasks.data.bsds import BsdsDataset
from samtasks.metrics import bsds
from samtasks.metrics.bsds import load_boundaries
from samtasks.utils import thinning

GOLDEN = Path(__file__).parent / "golden" / "bsds500-bench"


def _random_blobs(rng, shape=(40, 50)):
    from scipy import ndimage as ndi

    x = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.5, 3))
    return x > np.quantile(x, rng.uniform(0.2, 0.8))


# --- thinning ---------------------------------------------------------------------------------------


def test_thin_matches_the_documented_matlab_example():
    # The example of MATLAB-compatible thinning (a 5x3 block with a diagonal spur).
    square = np.zeros((7, 7), bool)
    square[1:-1, 2:-2] = True
    square[0, 1] = True
    expected = np.zeros((7, 7), bool)
    expected[0, 1] = expected[1, 2] = True
    expected[2:5, 3] = True
    np.testing.assert_array_equal(thinning.thin(square), expected)


def test_thin_two_pixel_lines_and_blobs():
    from skimage.measure import euler_number, label

    line = np.zeros((8, 20), bool)
    line[3:5, 2:18] = True  # 2 px thick
    out = thinning.thin(line)
    assert out.sum(0)[3:17].max() == 1  # one pixel thick along its length
    assert out[:, 3:17].any(0).all()  # and still spans it
    assert label(out, connectivity=2).max() == 1

    ring = np.zeros((20, 20), bool)
    ring[3:17, 3:17] = True
    ring[8:12, 8:12] = False  # a hole: thins to a closed loop
    out = thinning.thin(ring)
    assert euler_number(out, connectivity=2) == euler_number(ring, connectivity=2) == 0
    assert out.sum() < ring.sum() / 3

    disc = np.hypot(*np.mgrid[-8:9, -8:9]) <= 7  # a blob without holes shrinks to a connected stroke
    out = thinning.thin(disc)
    assert 0 < out.sum() <= 3 and label(out, connectivity=2).max() == 1

    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    np.testing.assert_array_equal(thinning.thin(single), single)
    assert not thinning.thin(np.zeros((4, 4), bool)).any()


def test_thin_equals_the_matlab_port_of_pyedgeeval():
    thin_module = pytest.importorskip("pyEdgeEval.preprocess.thin.thin")
    rng = np.random.default_rng(0)
    lut1, lut2 = thin_module._thin_iter_1_lut(), thin_module._thin_iter_2_lut()
    for _ in range(100):
        x = _random_blobs(rng)
        ref = x
        while True:  # MATLAB's loop: both subiterations until an iteration changes nothing
            step = lut1[thin_module.binary_image_to_lut_indices(ref)]
            step = lut2[thin_module.binary_image_to_lut_indices(step)]
            if np.array_equal(step, ref):
                break
            ref = step
        np.testing.assert_array_equal(thinning.thin(x), ref)


# --- matching ----------------------------------------------------------------------------------------


def _line(shape, row, cols=slice(10, 40)):
    m = np.zeros(shape, bool)
    m[row, cols] = True
    return m


def test_identical_maps_match_fully():
    b = _line((50, 50), 20)
    c = bsds.correspond_pixels(b, b)
    np.testing.assert_array_equal(c.edges, b)
    np.testing.assert_array_equal(c.boundary, b)


def test_shift_within_and_beyond_tolerance():
    shape = (100, 100)  # max distance 0.0075 * 141.4 = 1.06 px
    boundary = _line(shape, 50)
    assert bsds.correspond_pixels(_line(shape, 51), boundary).edges.sum() == 30
    assert bsds.correspond_pixels(_line(shape, 52), boundary).edges.sum() == 0
    assert bsds.correspond_pixels(_line(shape, 52), boundary, max_dist=0.015).boundary.sum() == 30


def test_matching_is_one_to_one_and_prefers_the_nearer_pixel():
    shape = (200, 200)  # 2.1 px
    boundary = np.zeros(shape, bool)
    boundary[100, 100] = True
    edges = np.zeros(shape, bool)
    edges[101, 100] = edges[98, 100] = True  # distance 1 and 2: both in range
    c = bsds.correspond_pixels(edges, boundary)
    assert c.edges.sum() == 1 and c.edges[101, 100]
    assert c.boundary.sum() == 1


def test_matching_maximizes_the_matched_count_before_the_distance():
    # e1 is nearest b1, but only e1 can reach b2: the official objective matches both pairs.
    shape = (200, 200)
    edges, boundary = np.zeros(shape, bool), np.zeros(shape, bool)
    edges[100, 100] = edges[100, 102] = True
    boundary[100, 101] = boundary[100, 98] = True
    c = bsds.correspond_pixels(edges, boundary)
    assert c.edges.sum() == 2 and c.boundary.sum() == 2


def test_empty_maps():
    b = _line((50, 50), 20)
    empty = np.zeros_like(b)
    assert bsds.correspond_pixels(empty, b).boundary.sum() == 0
    assert bsds.correspond_pixels(b, empty).edges.sum() == 0
    with pytest.raises(ValueError, match="differ in size"):
        bsds.correspond_pixels(b, b[:10])


# --- per-image counts ------------------------------------------------------------------------------------


def test_counts_of_a_perfect_and_an_empty_prediction():
    b = _line((60, 60), 30)
    perfect = bsds.evaluate_image(b.astype(float), [b, b], n_thresholds=5)
    np.testing.assert_array_equal(perfect.recall, 1.0)
    np.testing.assert_array_equal(perfect.precision, 1.0)
    assert perfect.sum_r.tolist() == [60] * 5 and perfect.sum_p.tolist() == [30] * 5
    empty = bsds.evaluate_image(np.zeros((60, 60)), [b], n_thresholds=5)
    assert empty.cnt_r.sum() == empty.sum_p.sum() == empty.cnt_p.sum() == 0


def test_precision_counts_a_pixel_matched_by_any_annotator_once():
    shape = (60, 60)
    a, b = _line(shape, 30, slice(0, 20)), _line(shape, 30, slice(10, 40))
    pred = _line(shape, 30, slice(0, 40)).astype(float)
    counts = bsds.evaluate_image(pred, [a, b, np.zeros(shape, bool)], n_thresholds=3)
    assert counts.sum_p.tolist() == [40] * 3
    assert counts.cnt_p.tolist() == [40] * 3  # union of the two annotators' matches
    assert counts.cnt_r.tolist() == [50] * 3 and counts.sum_r.tolist() == [50] * 3  # no-boundary annotator adds 0


def test_thresholds_and_thinning_in_counts():
    shape = (60, 60)
    b = _line(shape, 30)
    pred = np.zeros(shape)
    pred[29:31, 10:40] = 0.6  # a 2 px thick line: thinned to one pixel per column when thinning is on
    thick = bsds.evaluate_image(pred, [b], n_thresholds=3, thinning=False)
    thin = bsds.evaluate_image(pred, [b], n_thresholds=3)
    assert thick.sum_p.tolist() == [60, 60, 0]
    one = int(thinning.thin(pred >= 0.5).sum())
    assert thin.sum_p.tolist() == [one, one, 0] and 28 <= one <= 30
    np.testing.assert_allclose(bsds.thresholds(3), [0.25, 0.5, 0.75])


# --- summaries -------------------------------------------------------------------------------------------


def test_summaries_on_a_hand_made_curve():
    ts = bsds.thresholds(3)
    counts = bsds.ImageCounts(ts, np.array([8, 6, 2]), np.array([10, 10, 10]), np.array([4, 6, 2]), np.array([8, 8, 2]))
    r, p = counts.recall, counts.precision  # R .8 .6 .2, P .5 .75 1
    np.testing.assert_allclose(bsds.fmeasure(r, p), [2 * 0.4 / 1.3, 2 * 0.45 / 1.35, 2 * 0.2 / 1.2])
    best = bsds.max_f(ts, r, p)
    d = np.linspace(0, 1, 100)  # between thresholds 1 and 2 F peaks inside the segment
    f = bsds.fmeasure(0.8 * (1 - d) + 0.6 * d, 0.5 * (1 - d) + 0.75 * d)
    assert best.f == pytest.approx(f.max()) and best.f > bsds.fmeasure(0.6, 0.75)
    # AP: precision interpolated on recall 0.2..0.8 (outside: 0), times 0.01.
    grid = np.linspace(0, 1, 101)
    inside = (grid >= 0.2 - 1e-12) & (grid <= 0.8 + 1e-12)
    expected = np.interp(grid[inside], [0.2, 0.6, 0.8], [1.0, 0.75, 0.5]).sum() * 0.01
    assert bsds.average_precision(r, p) == pytest.approx(expected)
    # R50: the lowest precision is .5 -> the recall there.
    assert bsds.recall_at_precision(r, p, 0.5) == pytest.approx(0.8)
    assert bsds.recall_at_precision(r, p, 0.625) == pytest.approx(0.7)
    assert bsds.recall_at_precision(r * 0, p * 0.5, 0.9) == 0.0


def test_ois_uses_each_images_best_threshold_and_ods_the_summed_curve():
    ts = bsds.thresholds(2)
    one = bsds.ImageCounts(ts, np.array([10, 5]), np.array([10, 10]), np.array([5, 5]), np.array([10, 5]))
    two = bsds.ImageCounts(ts, np.array([4, 4]), np.array([10, 10]), np.array([4, 4]), np.array([4, 4]))
    acc = bsds.BoundaryMetrics(n_thresholds=2)
    acc.add(one.to_dict(), "a")
    acc.add(two.to_dict(), "b")
    m = acc.compute()
    # image one: F .667 at both thresholds -> the last; image two: same F at both -> the last.
    ois_r, ois_p = (5 + 4) / 20, (5 + 4) / (5 + 4)
    assert m["OIS"] == pytest.approx(2 * ois_r * ois_p / (ois_r + ois_p))
    total = acc.curve()
    assert total.cnt_r.tolist() == [14, 9] and total.sum_p.tolist() == [14, 9]
    assert m["ODS"] == pytest.approx(bsds.max_f(ts, total.recall, total.precision).f)
    with pytest.raises(ValueError, match="same thresholds"):
        acc.add(bsds.ImageCounts(bsds.thresholds(3), *(np.zeros(3, np.int64),) * 4).to_dict())


def test_official_sample_is_reproduced(tmp_path):
    bench = bsds.evaluate_folder(GOLDEN / "png", GOLDEN / "groundTruth", n_thresholds=5, workers=1)
    bench.write(tmp_path)
    for name in ("eval_bdry.txt", "eval_bdry_img.txt", "eval_bdry_thr.txt"):
        ours = np.loadtxt(tmp_path / name)
        official = np.loadtxt(GOLDEN / "official" / name)
        assert ours.shape == official.shape, name
        np.testing.assert_allclose(ours, official, atol=0.002, rtol=0, err_msg=name)
    assert (tmp_path / "pr_curve.png").stat().st_size > 0
    assert bench.names == ["2018", "3063", "5096", "6046", "8068"]


def test_parallel_workers_give_identical_results():
    one = bsds.evaluate_folder(GOLDEN / "png", GOLDEN / "groundTruth", n_thresholds=9, workers=1, limit=3)
    two = bsds.evaluate_folder(GOLDEN / "png", GOLDEN / "groundTruth", n_thresholds=9, workers=2, limit=3)
    assert one.compute() == two.compute()
    for a, b in zip(one.images, two.images, strict=True):
        assert a.to_dict() == b.to_dict()


@pytest.mark.slow  # a second oracle; the default run checks the same code on the official sample's files
def test_agrees_with_pyedgeeval_on_real_maps():
    """pyedgeeval runs the official C++ matcher (random sparse outlier edges, CSA): where equal-cost
    assignments exist it may pick another, so counts agree to a few pixels, not exactly."""
    evaluate = pytest.importorskip("pyEdgeEval.common.binary_label.evaluate_boundaries")
    ts = bsds.thresholds(9)
    ours, theirs = bsds.BoundaryMetrics(n_thresholds=9), bsds.BoundaryMetrics(n_thresholds=9)
    for name in ("2018", "5096", "8068"):
        prob = bsds.load_prediction(GOLDEN / "png" / f"{name}.png")
        gts = load_boundaries(GOLDEN / "groundTruth" / f"{name}.mat")
        counts = bsds.ImageCounts.from_dict(ours.update(prob, gts, name))
        ref = evaluate.evaluate_boundaries_threshold_multiple_gts(ts, prob, gts, max_dist=0.0075)
        ref = bsds.ImageCounts(ts, *(np.asarray(a, np.int64) for a in ref))
        theirs.add(ref.to_dict(), name)
        np.testing.assert_array_equal(counts.sum_r, ref.sum_r)
        np.testing.assert_allclose(counts.recall, ref.recall, atol=0.002)
        np.testing.assert_allclose(counts.precision, ref.precision, atol=0.003)
    a, b = ours.compute(), theirs.compute()
    for key in ("ODS", "OIS", "AP", "R50"):
        assert a[key] == pytest.approx(b[key], abs=0.002), key


# --- inputs ------------------------------------------------------------------------------------------------


def test_prediction_formats(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.random((6, 7))
    Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_allclose(bsds.load_prediction(tmp_path / "a.png"), np.round(prob * 255) / 255)
    Image.fromarray(np.round(prob * 65535).astype(np.uint16)).save(tmp_path / "b.png")
    np.testing.assert_allclose(bsds.load_prediction(tmp_path / "b.png"), prob, atol=1e-4)
    np.save(tmp_path / "c.npy", prob)
    np.testing.assert_array_equal(bsds.load_prediction(tmp_path / "c.npy"), prob)
    ucm2 = rng.random((13, 15))
    savemat(tmp_path / "d.mat", {"ucm2": ucm2})
    np.testing.assert_array_equal(bsds.load_prediction(tmp_path / "d.mat"), ucm2[2::2, 2::2])
    np.save(tmp_path / "bad.npy", prob * 2)
    with pytest.raises(ValueError, match=r"bad.npy has values outside \[0, 1\]"):
        bsds.load_prediction(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="cannot read prediction .*missing.png"):
        bsds.load_prediction(tmp_path / "missing.png")
    savemat(tmp_path / "e.mat", {"x": prob})
    with pytest.raises(ValueError, match="'ucm2' or a 'segs'"):
        bsds.load_prediction(tmp_path / "e.mat")


def test_segs_are_one_binary_map_per_threshold(tmp_path):
    seg = np.ones((4, 5), np.uint16)
    seg[:, 3:] = 2
    # the official seg2bdry at image size: the 2x2 block of a pixel holds two labels
    expected = np.zeros((4, 5), bool)
    expected[:, 2] = True
    np.testing.assert_array_equal(bsds.seg_boundaries(seg), expected)
    cells = np.empty((1, 2), object)
    cells[0, 0], cells[0, 1] = seg, np.ones((4, 5), np.uint16)
    savemat(tmp_path / "s.mat", {"segs": cells})
    stack = bsds.load_prediction(tmp_path / "s.mat")
    assert stack.shape == (2, 4, 5) and stack.dtype == bool
    counts = bsds.evaluate_image(stack, [expected])
    assert counts.thresholds.tolist() == [1.0, 2.0]
    assert counts.cnt_r.tolist() == [4, 0] and counts.sum_p.tolist() == [4, 0]


def test_dataset_and_folder_errors(tmp_path):
    data = BsdsDataset(GOLDEN)  # a flat root (no split folders)
    assert [s.image_id for s in data] == ["2018", "3063", "5096", "6046", "8068"]
    assert len(load_boundaries(data[0].annotations[0]["groundTruth"])) >= 4
    with pytest.raises(DatasetError, match="no BSDS ground truth"):
        BsdsDataset(tmp_path)
    (tmp_path / "x.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match=r"cannot read BSDS ground truth .*x.mat"):
        load_boundaries(tmp_path / "x.mat")
    with pytest.raises(ValueError, match="no prediction for 2018"):
        bsds.evaluate_folder(tmp_path, GOLDEN / "groundTruth")
    with pytest.raises(ValueError, match="prediction folder not found"):
        bsds.evaluate_folder(tmp_path / "nope", GOLDEN / "groundTruth")


def test_reused_components_give_the_per_threshold_solution():
    """Counts with solutions carried across thresholds equal matching every threshold from scratch."""
    prob = bsds.load_prediction(GOLDEN / "png" / "3063.png")
    gts = load_boundaries(GOLDEN / "groundTruth" / "3063.mat")
    counts = bsds.evaluate_image(prob, gts, n_thresholds=9)
    for k, t in enumerate(counts.thresholds):
        edges = thinning.thin(prob >= t)
        matches = [bsds.correspond_pixels(edges, b) for b in gts]
        assert counts.cnt_r[k] == sum(int(m.boundary.sum()) for m in matches)
        union = np.logical_or.reduce([m.edges for m in matches])
        assert abs(int(counts.cnt_p[k]) - int(union.sum())) <= max(2, 0.002 * counts.sum_p[k])  # equal-cost ties
