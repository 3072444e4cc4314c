"""Automatic mask generation: a point grid over the image (and zoomed crops) prompts SAM, the
masks are filtered and de-duplicated (PAPER.md section 1).

Unlike the official generator this one can keep each mask's low-res logits (`keep_logits`), which
the edge adapter needs, and it can apply the paper's rules where the official code differs (the
95%-of-image filter; dropping masks whose every island is small).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from samtasks.predictor import SamPredictor
from samtasks.structures import GeneratedMasks
from samtasks.utils.image import load_image
from samtasks.utils.masks import decode_rle, encode_rle, masks_to_boxes, remove_small_regions
from samtasks.utils.settings import check_field_types, check_range, preset_with_overrides

# Pixels of full-size mask logits held at once (128 MB of float32): bounds memory on large photos.
CHUNK_PIXELS = 1 << 25


@dataclass(frozen=True)
class AmgSettings:
    """Knobs of the generator, named like the official `SamAutomaticMaskGenerator`'s."""

    points_per_side: int = 32  # the grid of prompt points is points_per_side x points_per_side
    points_per_batch: int = 64  # points decoded at once (memory, not results, unless batch_nms_thresh > 0)
    multimask_output: bool = True  # 3 masks per point; False keeps the single-mask token (ablations)
    pred_iou_thresh: float = 0.88  # keep a mask if predicted IoU > this (0 disables)
    stability_score_thresh: float = 0.95  # keep if stability >= this (0 disables)
    stability_score_offset: float = 1.0  # the logit offset of the stability score's two thresholds
    box_nms_thresh: float = 0.7  # box IoU above which NMS drops the lower predicted IoU, within each crop
    # Also box NMS within each batch of points_per_batch points, before the crop's NMS (0 disables; the
    # public edge re-implementation stages it so, at 0.7). With it on, points_per_batch changes the result.
    batch_nms_thresh: float = 0.0
    crop_n_layers: int = 0  # layer i adds 2^i x 2^i zoomed crops (0: the whole image only)
    crop_nms_thresh: float = 0.7  # box NMS across crops, preferring the smaller crop's mask
    crop_overlap_ratio: float = 512 / 1500  # crops overlap by this fraction of the image's short side (layer 1)
    crop_n_points_downscale_factor: int = 1  # layer i's grid has points_per_side / factor^i points a side
    crop_edge_tolerance: float = 20.0  # px: a box this close to an inner crop edge is dropped
    min_mask_region_area: int = 0  # clean-up of holes and islands smaller than this (0 disables)
    cleanup_rule: str = "official"  # "paper": drop a mask whose islands are all small; "official": keep the largest
    max_area_fraction: float | None = None  # drop masks covering >= this fraction of the image (paper: 0.95)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "crop_overlap_ratio", "box_nms_thresh"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("crop_nms_thresh", self.crop_nms_thresh, 0.0, 1.0)
        check_range("max_area_fraction", self.max_area_fraction, 0.0, 1.0, open_low=True)
        for name in ("stability_score_offset", "crop_n_layers", "crop_edge_tolerance", "min_mask_region_area"):
            check_range(name, getattr(self, name), 0, math.inf)
        check_range("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor, 1, math.inf)
        if self.cleanup_rule not in ("paper", "official"):
            raise ValueError(f"cleanup_rule must be 'paper' or 'official', got {self.cleanup_rule!r}")


PRESETS: dict[str, AmgSettings] = {
    # The official package's defaults.
    "official": AmgSettings(),
    # The paper's SA-1B setting (Appendix B).
    "sa1b": AmgSettings(
        crop_n_layers=2,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,
        cleanup_rule="paper",
        max_area_fraction=0.95,
    ),
    # Object proposals on LVIS (section 7.3): 64x64, no crops, no filtering, NMS 0.9 (the masks of the
    # `proposals-lvis` proposals preset, before its ranking and cut).
    "amg-lvis": AmgSettings(points_per_side=64, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9),
    # Edge detection on BSDS500 (section 7.2, steps 1-2): 16x16, no filtering, NMS 0.7.
    "edges-bsds": AmgSettings(points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    # Text prompts' candidates, chosen for recall: the official 32x32 grid without crops, with looser
    # quality filters than the SA-1B setting (0.88 / 0.95), so that parts and small objects stay in the running.
    "text-candidates": AmgSettings(pred_iou_thresh=0.80, stability_score_thresh=0.85),
}


def point_grid(n_per_side: int) -> np.ndarray:
    """`float64 [n*n, 2]` (x, y) in [0, 1]: cell centers, x varying fastest."""
    side = np.linspace(1 / (2 * n_per_side), 1 - 1 / (2 * n_per_side), n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], -1).reshape(-1, 2)


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """The full image, then for layer i (1..n) a (2^i x 2^i) grid of overlapping crops.

    Returns:
        (XYXY crop box, layer index) pairs, the full image first.
    """
    h, w = image_size
    boxes = [([0, 0, w, h], 0)]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + w) / n)
        crop_h = math.ceil((overlap * (n - 1) + h) / n)
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in itertools.product(xs, ys):
            boxes.append(([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)], layer))
    return boxes


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks at `threshold + offset` and `threshold - offset`: `[N, H, W]` -> `[N]`."""
    # int32 sums are exact below 2^31 pixels and about twice as fast as the default int64.
    high = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    low = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return high / low


def near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_box: list[int], tol: float) -> torch.Tensor:
    """`[N]` bool: a box side within `tol` of a crop edge that is not also an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    near_crop = torch.isclose(boxes, crop[None], atol=tol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=tol, rtol=0)
    return (near_crop & ~near_image).any(1)


class AutomaticMaskGenerator:
    """Masks for everything in an image, from a point grid.

    Args:
        predictor: the `SamPredictor` to prompt (its image is replaced).
        keep_logits: also return each kept mask's low-res logits (`GeneratedMasks.low_res_logits`).
        **settings: `AmgSettings` fields; see `from_preset` for the named settings.
    """

    def __init__(self, predictor: SamPredictor, *, keep_logits: bool = False, **settings) -> None:
        self.predictor = predictor
        self.keep_logits = keep_logits
        self.settings = AmgSettings(**settings)

    @classmethod
    def from_preset(
        cls, predictor: SamPredictor, name: str, *, keep_logits: bool = False, **overrides
    ) -> AutomaticMaskGenerator:
        """A generator with the settings of `PRESETS[name]`, any `AmgSettings` field overridden by keyword."""
        settings = preset_with_overrides(PRESETS, name, overrides)
        return cls(predictor, keep_logits=keep_logits, **dataclasses.asdict(settings))

    def generate(self, image) -> GeneratedMasks:
        """Runs the generator on one image (array, PIL image or path, see `load_image`)."""
        s = self.settings
        image = load_image(image)
        size = image.shape[:2]
        crops = crop_boxes(size, s.crop_n_layers, s.crop_overlap_ratio)
        parts = [self._process_crop(image, box, layer) for box, layer in crops]
        result = GeneratedMasks.concat(parts, size)
        if len(crops) > 1 and len(result):
            # Across crops prefer the mask from the most zoomed-in (smallest) crop.
            crop_area = (result.crop_boxes[:, 2] - result.crop_boxes[:, 0]) * (
                result.crop_boxes[:, 3] - result.crop_boxes[:, 1]
            )
            result = result.select(self._nms(result.boxes, 1.0 / crop_area, s.crop_nms_thresh))
        if s.max_area_fraction is not None and len(result):
            result = result.select(np.flatnonzero(result.areas < s.max_area_fraction * size[0] * size[1]))
        if s.min_mask_region_area > 0 and len(result):
            result = self._clean_up(result)
        return result

    @staticmethod
    def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
        keep = batched_nms(
            torch.as_tensor(boxes, dtype=torch.float),
            torch.as_tensor(scores, dtype=torch.float),
            torch.zeros(len(boxes), dtype=torch.int64),
            iou_threshold=threshold,
        )
        return keep.numpy()

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> GeneratedMasks:
        s = self.settings
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        ch, cw = crop.shape[:2]
        self.predictor.set_image(crop)
        n = int(s.points_per_side / (s.crop_n_points_downscale_factor**layer))
        points = point_grid(n) * np.array([cw, ch])
        # Box NMS needs only boxes and scores, so every candidate keeps those, but its RLE (and logits)
        # only while it survives NMS among the survivors so far and its own batch; a mask that the
        # crop's NMS keeps after its suppressor was itself suppressed is decoded again. So memory does
        # not grow with the grid.
        light, heavy = [], {}  # all candidates without masks; candidate index -> (RLE, logits) of survivors
        alive = np.zeros(0, np.int64)
        for i in range(0, len(points), s.points_per_batch):
            part = self._process_batch(points[i : i + s.points_per_batch], crop_box, image.shape[:2])
            start = sum(len(p) for p in light)
            for j, rle in enumerate(part.rles):
                heavy[start + j] = (rle, None if part.low_res_logits is None else part.low_res_logits[j])
            light.append(dataclasses.replace(part, rles=[None] * len(part), low_res_logits=None))
            data = GeneratedMasks.concat(light, image.shape[:2])
            candidates = np.concatenate([alive, start + np.arange(len(part))])
            if len(candidates):
                alive = candidates[self._nms(data.boxes[candidates], data.predicted_iou[candidates], s.box_nms_thresh)]
            heavy = {k: heavy[k] for k in alive.tolist()}
        data = GeneratedMasks.concat(light, image.shape[:2])
        keep = self._nms(data.boxes, data.predicted_iou, s.box_nms_thresh) if len(data) else np.zeros(0, np.int64)
        for k in keep.tolist():
            if k not in heavy:
                heavy[k] = self._decode_again(data, k, points, crop_box, image.shape[:2])
        self.predictor.reset_image()
        data = data.select(keep)
        data.rles = [heavy[k][0] for k in keep.tolist()]
        if self.keep_logits:
            logits = [heavy[k][1] for k in keep.tolist()]
            data.low_res_logits = (
                np.stack(logits) if logits else np.zeros((0, *self.predictor.mask_input_size), np.float32)
            )
        return data

    def _decode_again(
        self, data: GeneratedMasks, k: int, points: np.ndarray, crop_box: list[int], image_size: tuple[int, int]
    ) -> tuple[dict, np.ndarray | None]:
        """Candidate k's RLE and logits, decoding its point again (alone, so without batch NMS)."""
        x0, y0 = crop_box[:2]
        frame = (points + np.array([x0, y0])).astype(np.float32)  # as `_process_batch` records points
        point = np.flatnonzero((frame == data.points[k]).all(1))[:1]
        again = self._process_batch(points[point], crop_box, image_size, batch_nms=False)
        if not len(again):
            # Decoded alone, a score exactly at a threshold can round the other way: take the point's
            # masks unfiltered and pick the same one below.
            strict = self.settings
            self.settings = dataclasses.replace(strict, pred_iou_thresh=0.0, stability_score_thresh=0.0)
            try:
                again = self._process_batch(points[point], crop_box, image_size, batch_nms=False)
            finally:
                self.settings = strict
        # The same mask: same box, predicted IoU and stability up to float rounding across batch sizes.
        cost = np.abs(again.predicted_iou - data.predicted_iou[k]) + np.abs(
            again.stability_score - data.stability_score[k]
        )
        j = int(np.argmin(cost + np.abs(again.boxes - data.boxes[k]).sum(1)))
        return again.rles[j], None if again.low_res_logits is None else again.low_res_logits[j]

    def _process_batch(
        self, points: np.ndarray, crop_box: list[int], image_size: tuple[int, int], *, batch_nms: bool = True
    ) -> GeneratedMasks:
        s = self.settings
        predictor = self.predictor
        x0, y0, x1, y1 = crop_box
        h, w = image_size
        pts = torch.as_tensor(points, dtype=torch.float32)[:, None]  # [B, 1, 2] crop frame
        out = predictor.predict_torch(
            pts,
            torch.ones(len(points), 1, dtype=torch.int64),
            multimask=s.multimask_output,
            return_masks=False,
            min_iou=s.pred_iou_thresh if s.pred_iou_thresh > 0 else None,  # no masks for prompts the filter drops
            raw_logits=True,  # upsampled unclamped, as SAM 2.1's generator does
        )
        logits = out.low_res_logits.flatten(0, 1)  # [3B, S, S]
        iou = out.iou_scores.flatten()
        point_of = torch.arange(len(points)).repeat_interleave(out.iou_scores.shape[1])
        keep = iou > s.pred_iou_thresh if s.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
        logits, iou, point_of = logits[keep], iou[keep], point_of[keep.cpu()]
        threshold = predictor.model.mask_threshold
        # Upsample a few masks at a time: stability, binary masks and boxes need the crop-size logits;
        # kept masks become RLE at once, so no full-size mask outlives its chunk.
        kept_rles, kept_scores, kept_boxes, kept_index = [], [], [], []
        step = max(1, CHUNK_PIXELS // (y1 - y0) // (x1 - x0))
        for i in range(0, len(logits), step):
            full = predictor.upsample(logits[i : i + step][:, None])[:, 0]  # [c, ch, cw]
            stability = stability_score(full, threshold, s.stability_score_offset)
            masks = full > threshold
            del full
            boxes = masks_to_boxes(masks) + torch.tensor([x0, y0, x0, y0], device=masks.device)
            ok = (
                stability >= s.stability_score_thresh
                if s.stability_score_thresh > 0
                else torch.ones_like(stability, dtype=torch.bool)
            )
            ok &= ~near_crop_edge(boxes, crop_box, [0, 0, w, h], s.crop_edge_tolerance)
            kept_rles += _encode_in_image(masks[ok].cpu().numpy(), crop_box, image_size)
            kept_scores.append(stability[ok].cpu())
            kept_boxes.append(boxes[ok].cpu())
            kept_index.append(torch.arange(i, min(i + step, len(logits)))[ok.cpu()])
        if not kept_index:
            return GeneratedMasks(image_size=image_size)
        index = torch.cat(kept_index)
        data = GeneratedMasks(
            image_size=image_size,
            rles=kept_rles,
            boxes=torch.cat(kept_boxes).numpy(),
            predicted_iou=iou[index].float().cpu().numpy(),
            stability_score=torch.cat(kept_scores).float().numpy(),
            points=(points[point_of[index].numpy()] + np.array([x0, y0])).astype(np.float32),
            crop_boxes=np.tile(np.array(crop_box, np.int64), (len(index), 1)),
            low_res_logits=logits[index].float().cpu().numpy() if self.keep_logits else None,
        )
        if batch_nms and s.batch_nms_thresh > 0 and len(data):
            data = data.select(self._nms(data.boxes, data.predicted_iou, s.batch_nms_thresh))
        return data

    def _clean_up(self, result: GeneratedMasks) -> GeneratedMasks:
        """Removes small holes and islands, then NMS again preferring masks the clean-up left alone
        (one mask decoded at a time)."""
        s = self.settings
        rles, boxes, unchanged, alive = [], [], [], []
        for i, rle in enumerate(result.rles):
            mask, changed = remove_small_regions(
                decode_rle(rle).astype(bool), s.min_mask_region_area, rule=s.cleanup_rule
            )
            if mask is None:
                continue
            boxes.append(masks_to_boxes(torch.from_numpy(mask[None]))[0].numpy())
            rles.append(encode_rle(mask[None])[0] if changed else rle)
            unchanged.append(0.0 if changed else 1.0)
            alive.append(i)
        if not alive:
            return GeneratedMasks(image_size=result.image_size)
        result = result.select(np.array(alive))
        boxes = np.stack(boxes)
        keep = self._nms(boxes, np.array(unchanged), max(s.box_nms_thresh, s.crop_nms_thresh))
        for k in keep:
            if unchanged[k] == 0.0:
                result.rles[k] = rles[k]
                result.boxes[k] = boxes[k]
        return result.select(keep)


def _encode_in_image(masks: np.ndarray, crop_box: list[int], image_size: tuple[int, int]) -> list[dict]:
    """RLEs in the image frame of `bool [c, ch, cw]` masks of the crop `crop_box`, padded a few at a
    time so that the image-size copies stay within `CHUNK_PIXELS`."""
    x0, y0, x1, y1 = crop_box
    h, w = image_size
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return encode_rle(masks)
    rles = []
    step = max(1, CHUNK_PIXELS // (h * w))
    for i in range(0, len(masks), step):
        full_frame = np.zeros((len(masks[i : i + step]), h, w), bool)
        full_frame[:, y0:y1, x0:x1] = masks[i : i + step]
        rles += encode_rle(full_frame)
    return rles
