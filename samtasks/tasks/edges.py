"""Edge detection with SAM (PAPER.md section 3): the automatic mask generator on a 16x16 grid, each
kept mask's probability map Sobel-filtered and gated to the mask's outer boundary, the pixel-wise
maximum over masks normalized to [0, 1], then structured-edge NMS.

Every step is vectorized (masks in chunks on the predictor's device, the NMS over whole arrays), and
each can be switched for ablations: no gate, mean instead of max, thinning or nothing instead of NMS.
Two presets: `edges-paper` (the paper's text) and `edges-reference`, the recipe of the public
re-implementation (ymgw55/segment-anything-edge-detection); `EdgeSettings` documents where they differ.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from samtasks.predictor import SamPredictor
from samtasks.structures import EdgeMap, GeneratedMasks
from samtasks.tasks.amg import CHUNK_PIXELS, AmgSettings, AutomaticMaskGenerator
from samtasks.tasks.amg import PRESETS as AMG_PRESETS
from samtasks.utils.image import EDGE_QUANTIZE
from samtasks.utils.memory import release_freed_memory
from samtasks.utils.settings import check_field_types, preset_with_overrides
from samtasks.utils.thinning import thin

CHOICES = {
    "sobel_padding": ("replicate", "zeros"),
    "gate_ring": ("outer", "sobel"),
    "reduce": ("max", "mean"),
    "normalize": ("max", "min-max"),
    "suppression": ("nms", "thin", "none"),
    "smooth_border": ("symmetric", "reflect-101"),
    "orientation": ("toolbox", "opencv"),
    "quantize": EDGE_QUANTIZE,
}


def _check(name: str, value: str) -> None:
    if value not in CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")


@dataclass(frozen=True)
class EdgeSettings:
    """The edge pipeline after the mask generator. Defaults are the paper's protocol (`edges-paper`);
    the comments name the re-implementation's choice where `edges-reference` differs."""

    # A key of `samtasks.tasks.amg.PRESETS`; this one: 16x16 grid, 3 masks per point, no filtering, box NMS
    # 0.7, no crops.
    amg_preset: str = "edges-bsds"
    amg: dict = dataclasses.field(default_factory=dict)  # AmgSettings fields overriding the preset
    # How the Sobel filters (of the probability map and, for the "sobel" gate, of the binary mask) see past
    # the image: "replicate" the border pixel, or "zeros" (reference), which puts a step, so an edge, along
    # the image frame wherever a mask's probability is high there.
    sobel_padding: str = "replicate"
    gate: bool = True  # keep each mask's Sobel response only on its boundary (gate_ring); False: everywhere
    # Which boundary pixels the gate keeps: "outer", the ring a 3x3 dilation adds outside the mask; or
    # "sobel" (reference), where the binary mask's Sobel is non-zero: the rings on both sides of the
    # boundary, and with zero padding also the mask's pixels on the image frame.
    gate_ring: str = "outer"
    reduce: str = "max"  # how masks combine per pixel: "max" (paper) or "mean"
    # "max": edges / max; "min-max" (reference): (edges - min) / (max - min), the same map whenever a
    # pixel is 0 (the gate leaves most pixels 0).
    normalize: str = "max"
    suppression: str = "nms"  # "nms" (structured-edge NMS), "thin" (keep the thinned support), "none"
    # Triangle smoothing of the map before NMS (the usual convTri(E, 1) = [1 2 1] / 4 per axis); 0: none.
    smooth_radius: float = 1.0
    # Its border: "symmetric" (MATLAB convTri: d c b a | a b c d) or "reflect-101" (reference: OpenCV's
    # GaussianBlur 3x3, sigma 0, which is the same [1 2 1] / 4: d c b | a b c d).
    smooth_border: str = "symmetric"
    # The NMS normal: "toolbox", the structured-edge toolbox's MATLAB recipe (convTri(E, 4), `gradient`
    # twice), or "opencv" (reference), OpenCV's `computeOrientation` (radius-4 triangle and 3x3 Sobel
    # second derivatives, reflect-101 borders).
    orientation: str = "toolbox"
    edge_nms_radius: int = 1  # NMS compares with neighbours this far along the normal (reference: 2)
    edge_nms_border: int = 5  # NMS fades edges within this many pixels of the border (reference: 0)
    edge_nms_multiplier: float = 1.01  # a pixel survives if >= its neighbours / this (reference: 1)
    quantize: str = "round"  # the 8-bit PNG: "round" (255 e) or "floor" (reference: uint8(255 e) in float32)
    mask_chunk: int = 32  # masks upsampled and filtered at once (memory: chunk x H x W floats)

    def __post_init__(self) -> None:
        check_field_types(self)
        self.amg_settings()  # an unknown preset or AMG knob is an error here
        for name in CHOICES:
            _check(name, getattr(self, name))
        if self.edge_nms_radius < 1 or self.edge_nms_border < 0 or self.mask_chunk < 1:
            raise ValueError("edge_nms_radius and mask_chunk must be >= 1, edge_nms_border >= 0")
        if self.smooth_radius < 0 or self.edge_nms_multiplier <= 0:
            raise ValueError("smooth_radius must be >= 0 and edge_nms_multiplier > 0")

    def amg_settings(self) -> AmgSettings:
        """The generator's settings: `amg_preset` with the `amg` overrides."""
        return preset_with_overrides(AMG_PRESETS, self.amg_preset, self.amg)


PRESETS: dict[str, EdgeSettings] = {
    # The paper's recipe (PAPER.md section 3), for its Table 3 "SAM" row.
    "edges-paper": EdgeSettings(),
    # The public re-implementation's `pipeline.py` at its defaults (ymgw55/segment-anything-edge-detection),
    # for the number reported for it (README, "Two edge recipes"): box NMS per batch of 64 points and again
    # per image, zero-padded Sobel, Sobel gate, min-max normalization, GaussianBlur 3x3, OpenCV's
    # `computeOrientation` and `edgesNms` defaults (r=2, s=0, m=1), PNG by truncation.
    "edges-reference": EdgeSettings(
        amg={"batch_nms_thresh": 0.7},
        sobel_padding="zeros",
        gate_ring="sobel",
        normalize="min-max",
        smooth_border="reflect-101",
        orientation="opencv",
        edge_nms_radius=2,
        edge_nms_border=0,
        edge_nms_multiplier=1.0,
        quantize="floor",
    ),
}


class EdgeDetector:
    """SAM as a zero-shot edge detector.

    Args:
        predictor: the SAM predictor (its device runs the mask filtering too).
        settings: the pipeline; `EdgeSettings()` is the paper's.
    """

    def __init__(self, predictor: SamPredictor, settings: EdgeSettings | None = None) -> None:
        self.predictor = predictor
        self.settings = settings or EdgeSettings()
        amg = dataclasses.asdict(self.settings.amg_settings())
        self.generator = AutomaticMaskGenerator(predictor, keep_logits=True, **amg)

    @classmethod
    def from_preset(cls, predictor: SamPredictor, name: str, **overrides) -> EdgeDetector:
        """A detector with `PRESETS[name]`, any `EdgeSettings` field overridden by keyword (`amg`
        entries are merged into the preset's)."""
        return cls(predictor, preset_with_overrides(PRESETS, name, overrides))

    def detect(self, image) -> EdgeMap:
        """`image`: RGB `uint8 [H, W, 3]`, a PIL image or a path. Returns the edge map at image size."""
        masks = self.generator.generate(image)  # leaves the image set on the predictor
        release_freed_memory()  # the decoder's freed batches, before the full-size maps need memory
        h, w = masks.image_size
        s = self.settings
        if len(masks) == 0:
            return EdgeMap(np.zeros((h, w), np.float32), 0, quantize=s.quantize)
        combined = torch.zeros((h, w), dtype=torch.float32, device=self.predictor.device)
        # Chunks of masks, and on large photos bands of rows with a 2-row halo (the 3x3 Sobel and
        # dilation see one row each way), keep the float temporaries within `CHUNK_PIXELS`.
        chunk = max(1, min(s.mask_chunk, CHUNK_PIXELS // (h * w)))
        rows = max(1, CHUNK_PIXELS // 8 // (chunk * w))  # mask_edges makes about 8 float temporaries
        for start in range(0, len(masks), chunk):
            full = self._full_logits(masks, slice(start, start + chunk))  # [B, H, W]
            for top in range(0, h, rows):
                lo, hi = max(0, top - 2), min(h, top + rows + 2)
                response = mask_edges(full[:, lo:hi], padding=s.sobel_padding, gate=s.gate, gate_ring=s.gate_ring)
                response = response[:, top - lo : top - lo + rows]
                band = combined[top : top + rows]
                if s.reduce == "max":
                    band.copy_(torch.maximum(band, response.amax(0)))
                else:
                    band += response.sum(0)
            del full
        edges = combined.cpu().numpy().astype(np.float64)
        del combined
        if s.reduce == "mean":
            edges /= len(masks)
        edges = suppress(normalize(edges, s.normalize), s)
        return EdgeMap(edges.astype(np.float32), len(masks), quantize=s.quantize)

    def _full_logits(self, masks: GeneratedMasks, index: slice) -> torch.Tensor:
        """Masks `index` as logits `float32 [B, H, W]` at image size (outside a mask's crop: -1e4)."""
        h, w = masks.image_size
        logits = torch.from_numpy(masks.low_res_logits[index]).to(self.predictor.device)  # [B, S, S]
        crops = masks.crop_boxes[index]
        out = torch.full((len(logits), h, w), -1e4, dtype=torch.float32, device=logits.device)
        for box in np.unique(crops, axis=0):
            x0, y0, x1, y1 = (int(v) for v in box)
            rows = torch.from_numpy(np.flatnonzero((crops == box).all(1))).to(logits.device)
            part = self.predictor.frame.upsample(logits[rows], (y1 - y0, x1 - x0))
            out[rows, y0:y1, x0:x1] = part.float()
        return out


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_PAD_MODES = {"replicate": "replicate", "zeros": "constant"}


def _sobel(images: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """3x3 Sobel derivatives: `float [B, 1, H, W]` -> `[B, 2, H, W]` (d/dx, d/dy; x right, y down);
    `padding` is "replicate" or "zeros"."""
    _check("sobel_padding", padding)
    kx = _SOBEL_X.to(images)
    kernels = torch.stack([kx, kx.T])[:, None]  # [2, 1, 3, 3]
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode=_PAD_MODES[padding]), kernels)


def mask_edges(
    logits: torch.Tensor, *, padding: str = "replicate", gate: bool = True, gate_ring: str = "outer"
) -> torch.Tensor:
    """Sobel magnitude of each mask's probability map, kept on the mask's boundary.

    Args:
        logits: `float [B, H, W]` mask logits at image size.
        padding: the Sobel's border, "replicate" or "zeros" (see `EdgeSettings.sobel_padding`).
        gate: zero the response off the boundary ring of the mask (logit > 0).
        gate_ring: "outer" (the ring a 3x3 dilation adds) or "sobel" (where the mask's Sobel is non-zero).

    Returns:
        `float [B, H, W]`.
    """
    _check("gate_ring", gate_ring)
    prob = torch.sigmoid(logits)[:, None]  # [B, 1, H, W]
    magnitude = _sobel(prob, padding).pow(2).sum(1).sqrt()  # [B, H, W]
    if not gate:
        return magnitude
    inside = (logits > 0).float()[:, None]
    if gate_ring == "outer":
        ring = (F.max_pool2d(inside, 3, stride=1, padding=1) - inside)[:, 0] > 0
    else:
        ring = (_sobel(inside, padding) != 0).any(1)
    return magnitude * ring


def normalize(edges: np.ndarray, rule: str = "max") -> np.ndarray:
    """Linear map to [0, 1]: "max" `edges / max`, or "min-max" `(edges - min) / (max - min)`; a map
    without a positive range becomes `edges - min`."""
    _check("normalize", rule)
    if not edges.size:
        return edges
    low = float(edges.min()) if rule == "min-max" else 0.0
    span = float(edges.max()) - low
    return (edges - low) / span if span > 0 else edges - low


def suppress(edges: np.ndarray, settings: EdgeSettings) -> np.ndarray:
    """The settings' suppression step on a `float64 [H, W]` map in [0, 1]; on large maps the NMS runs
    on bands of rows with enough rows of context to give the same values, with bounded temporaries."""
    if settings.suppression == "none":
        return edges
    h, w = edges.shape
    # Context a band needs: the smoothing, the orientation's smoothing (4) and two gradients, the
    # interpolated neighbours, and twice the border fade (so a band fades only rows it discards).
    halo = math.ceil(settings.smooth_radius) + 7 + settings.edge_nms_radius + 2 * settings.edge_nms_border
    rows = max(4 * halo, CHUNK_PIXELS // 40 // w)  # ~20 float64 temporaries per band: 4 x CHUNK_PIXELS bytes
    if settings.suppression == "nms" and h > rows + 2 * halo:
        out = np.empty_like(edges, dtype=np.float64)
        for top in range(0, h, rows):
            lo, hi = max(0, top - halo), min(h, top + rows + halo)
            band = _suppress_whole(edges[lo:hi], settings)
            out[top : top + rows] = band[top - lo : top - lo + rows]
        return out
    return _suppress_whole(edges, settings)


def _suppress_whole(edges: np.ndarray, settings: EdgeSettings) -> np.ndarray:
    if settings.suppression == "thin":
        return edges * thin(edges > 0)
    smoothed = conv_tri(edges, settings.smooth_radius, border=settings.smooth_border)
    return edge_nms(
        smoothed,
        edge_orientation(smoothed, settings.orientation),
        radius=settings.edge_nms_radius,
        border=settings.edge_nms_border,
        multiplier=settings.edge_nms_multiplier,
    )


_BORDER_MODES = {"symmetric": "reflect", "reflect-101": "mirror"}  # scipy.ndimage's names


def conv_tri(image: np.ndarray, radius: float, *, border: str = "symmetric") -> np.ndarray:
    """Triangle-filter smoothing (the structured-edge toolbox's `convTri`): `[1 .. r+1 .. 1] / (r+1)^2`
    per axis; for `0 < r <= 1` the 3-tap `[1 p 1] / (2 + p)`, `p = 12 / r / (r + 2) - 2`. `border`:
    "symmetric" (MATLAB's, the toolbox's) or "reflect-101" (OpenCV's default, which its `imsmooth` and
    `GaussianBlur` use)."""
    from scipy.ndimage import convolve1d

    _check("smooth_border", border)
    if radius <= 0:
        return image
    if radius <= 1:
        p = 12 / radius / (radius + 2) - 2
        kernel = np.array([1.0, p, 1.0]) / (2 + p)
    else:
        r = int(radius)
        kernel = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]) / (r + 1) ** 2
    out = convolve1d(np.asarray(image, np.float64), kernel, axis=1, mode=_BORDER_MODES[border])
    return convolve1d(out, kernel, axis=0, mode=_BORDER_MODES[border])


def edge_orientation(edges: np.ndarray, recipe: str = "toolbox") -> np.ndarray:
    """Normal orientation in [0, pi) (x right, y down) from the second derivatives of the map smoothed
    by a radius-4 triangle: `mod(atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)), pi)`.

    `recipe`: "toolbox", the structured-edge toolbox's (`convTri(E, 4)`, then MATLAB's `gradient` twice:
    central differences, one-sided at the border); "opencv", OpenCV's `computeOrientation` (the same
    triangle with a reflect-101 border, then 3x3 Sobel second derivatives, reflect-101).
    """
    from scipy.ndimage import correlate1d

    _check("orientation", recipe)
    if recipe == "toolbox":
        oy, ox = np.gradient(conv_tri(edges, 4))
        oxx = np.gradient(ox, axis=1)
        oyy, oxy = np.gradient(oy)
    else:
        smoothed = conv_tri(edges, 4, border="reflect-101")

        def separable(x_kernel: list[float], y_kernel: list[float]) -> np.ndarray:
            along_x = correlate1d(smoothed, x_kernel, axis=1, mode="mirror")
            return correlate1d(along_x, y_kernel, axis=0, mode="mirror")

        oxx = separable([1, -2, 1], [1, 2, 1])
        oyy = separable([1, 2, 1], [1, -2, 1])
        oxy = separable([-1, 0, 1], [-1, 0, 1])
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)


def edge_nms(
    edges: np.ndarray, orientation: np.ndarray, *, radius: int = 1, border: int = 5, multiplier: float = 1.01
) -> np.ndarray:
    """Structured-edge non-maximum suppression (`edgesNmsMex`), vectorized.

    A pixel is zeroed unless `multiplier * edge` is at least the bilinearly interpolated edge at every
    offset `d = -radius..radius` along `(cos o, sin o)`; then values within `border` pixels of the
    image edge are scaled by their distance / border.

    Args:
        edges: `float [H, W]`.
        orientation: `float [H, W]` normal angle, radians (x right, y down).

    Returns:
        `float64 [H, W]`.
    """
    e = np.asarray(edges, np.float64)
    h, w = e.shape
    out = e.copy()
    cos, sin = np.cos(orientation), np.sin(orientation)
    ys, xs = np.mgrid[0:h, 0:w]
    scaled = e * multiplier
    for d in range(-radius, radius + 1):
        if d == 0:
            continue
        x = np.clip(xs + d * cos, 0, w - 1.001)  # the reference clamps to these bounds
        y = np.clip(ys + d * sin, 0, h - 1.001)
        x0, y0 = x.astype(np.int64), y.astype(np.int64)
        dx0, dy0 = x - x0, y - y0
        dx1, dy1 = 1 - dx0, 1 - dy0
        near = e[y0, x0] * dx1 * dy1 + e[y0, x0 + 1] * dx0 * dy1 + e[y0 + 1, x0] * dx1 * dy0
        near = near + e[y0 + 1, x0 + 1] * dx0 * dy0
        out[scaled < near] = 0
    s = min(border, w // 2, h // 2)
    for i in range(s):  # the reference's order of the border scalings, for identical rounding
        out[:, i] *= i / s
        out[:, w - 1 - i] *= i / s
    for i in range(s):
        out[i, :] *= i / s
        out[h - 1 - i, :] *= i / s
    return out


__all__ = [
    "PRESETS",
    "EdgeDetector",
    "EdgeSettings",
    "conv_tri",
    "edge_nms",
    "edge_orientation",
    "mask_edges",
]
