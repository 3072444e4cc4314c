"""`SamPredictor`: encode an image (or a batch of images) once, then decode many prompts in batches.

Frames: prompts are given in original image pixels, points as (x, y) = (column, row), boxes as
XYXY. They are mapped to the model's prompt frame (`model.frame`: for SAM the long side resized to
1024 and padded bottom/right) internally. Masks come back at the original size. Any SAM-family
model of `samtasks.build_sam` works here (see `samtasks.modeling.frame` for what it provides).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from samtasks.structures import MaskPrediction
from samtasks.utils.device import resolve_device
from samtasks.utils.image import load_image
from samtasks.utils.memory import release_freed_memory

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Upsample at most this many output pixels at once (float32: 256 MiB) to bound memory.
_UPSAMPLE_PIXELS = 1 << 26


@dataclass(frozen=True)
class _ImageState:
    original_size: tuple[int, int]  # (H, W) of the original image


class SamPredictor:
    """Promptable segmentation on encoded images.

    Args:
        model: a SAM-family model (see `samtasks.build_sam`); moved to `device`.
        device: "cpu", "cuda", "cuda:1", "mps", or None to pick the best available.
        dtype: "float32" (default), or "bfloat16" / "float16" to run under autocast (CUDA; bfloat16
            also on CPU). Outputs are float32 either way.
        prompt_batch_size: prompts decoded per call to the mask decoder; bounds memory.
        compile: wrap the image encoder in `torch.compile` (worth it on GPU for many images).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        prompt_batch_size: int = 64,
        compile: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if prompt_batch_size < 1:
            raise ValueError(f"prompt_batch_size must be >= 1, got {prompt_batch_size}")
        self.device = resolve_device(device)
        if dtype == "float16" and self.device.type != "cuda":
            raise ValueError(f"dtype float16 needs a CUDA device, got {self.device}")
        self.dtype = _DTYPES[dtype]
        self.model = model.to(self.device).eval()
        self.prompt_batch_size = prompt_batch_size
        self.frame = model.frame
        self._encode = torch.compile(model.encode) if compile else model.encode
        self._features: dict[str, torch.Tensor] | None = None  # each [B, ...]
        self._images: list[_ImageState] = []

    # ------------------------------------------------------------------ images

    @property
    def features(self) -> torch.Tensor | None:
        """`[B, C, h, w]` image embeddings of the encoded images (None before `set_image`)."""
        return None if self._features is None else self._features["image_embeddings"]

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """(S, S) of `mask_input` and of the low-res logits (256 for the official models)."""
        return self.model.mask_input_size

    @property
    def num_multimask_outputs(self) -> int:
        """Masks per prompt with `multimask=True` (3 for SAM; 1 for a model that fuses its outputs)."""
        return self.model.num_multimask_outputs

    @property
    def num_images(self) -> int:
        return len(self._images)

    def original_size(self, image_index: int = 0) -> tuple[int, int]:
        """(H, W) of encoded image `image_index`."""
        return self._state(image_index).original_size

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def set_image(self, image: np.ndarray | Image.Image | str | Path) -> None:
        """Encodes one image: `uint8 [H, W, 3]` RGB array (other layouts converted), PIL image or path."""
        self.set_images([image])

    @torch.inference_mode()
    def set_images(self, images: Sequence[np.ndarray | Image.Image | str | Path]) -> None:
        """Encodes several images in one encoder batch; prompts then pick one with `image_index`."""
        if len(images) == 0:
            raise ValueError("set_images needs at least one image")
        arrays = [load_image(image) for image in images]
        batch = torch.stack([self.frame.encoder_input(array, self.device) for array in arrays])  # [B, 3, S, S]
        with self._autocast():
            features = self._encode(batch)
        self._features = {key: value.float() for key, value in features.items()}
        self._images = [_ImageState(array.shape[:2]) for array in arrays]
        del batch, features
        release_freed_memory()  # the encoder's freed activations, before the decoder needs memory

    def reset_image(self) -> None:
        self._features = None
        self._images = []

    def _state(self, image_index: int) -> _ImageState:
        if self._features is None:
            raise RuntimeError("no image is set: call set_image(...) or set_images([...]) first")
        if not 0 <= image_index < len(self._images):
            raise ValueError(f"image_index {image_index} out of range for {len(self._images)} encoded image(s)")
        return self._images[image_index]

    # ----------------------------------------------------------------- prompts

    def predict(
        self,
        points: np.ndarray | Sequence | None = None,
        labels: np.ndarray | Sequence | None = None,
        boxes: np.ndarray | Sequence | None = None,
        mask_input: np.ndarray | None = None,
        *,
        multimask: bool = True,
        image_index: int = 0,
        return_masks: bool = True,
    ) -> MaskPrediction:
        """Predicts masks for one prompt or a batch of P prompts.

        Args:
            points: `[P, N, 2]` (x, y) original-image pixels, or `[N, 2]` for one prompt.
            labels: `[P, N]` (or `[N]`): 1 foreground, 0 background, -1 ignored (padding to a common
                N). Default: all foreground.
            boxes: `[P, 4]` (or `[4]`) XYXY original-image pixels.
            mask_input: `[P, 1, S, S]` (or `[1, S, S]`, `[S, S]`) low-res logits, e.g. a previous
                call's `low_res_logits[:, i:i+1]`.
            multimask: 3 masks per prompt (tokens 1..3) instead of 1 (token 0).
            image_index: which image of `set_images` the prompts refer to.
            return_masks: False skips upsampling (`masks` is None).

        Returns:
            `MaskPrediction` of numpy arrays: masks bool `[P, C, H, W]`, iou_scores `[P, C]`,
            low_res_logits `[P, C, S, S]` (clamped to the frame's `logit_limit` if it has one, after
            the masks are upsampled), object_scores `[P]` for models that predict one (else None).
            C is `num_multimask_outputs` with multimask, else 1.

        Raises:
            ValueError: no prompt, shapes that disagree, non-finite values, labels outside
                {-1, 0, 1}, points outside the image, boxes outside the image or with x1 <= x0 or y1 <= y0.
        """
        points_t = labels_t = boxes_t = masks_t = None
        if points is not None:
            points_t = torch.as_tensor(np.asarray(points, dtype=np.float32))
            if points_t.ndim == 2:
                points_t = points_t[None]
            if labels is not None:
                labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
                if labels_t.ndim == 1 and points_t.shape[0] == 1:
                    labels_t = labels_t[None]
        elif labels is not None:
            raise ValueError("labels given without points")
        if boxes is not None:
            boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
            if boxes_t.ndim == 1:
                boxes_t = boxes_t[None]
        if mask_input is not None:
            masks_t = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
            while masks_t.ndim < 4:
                masks_t = masks_t[None]
        out = self.predict_torch(
            points_t,
            labels_t,
            boxes_t,
            masks_t,
            multimask=multimask,
            image_index=image_index,
            return_masks=return_masks,
        )
        return MaskPrediction(
            masks=None if out.masks is None else out.masks.cpu().numpy(),
            iou_scores=out.iou_scores.cpu().numpy(),
            low_res_logits=out.low_res_logits.cpu().numpy(),
            object_scores=None if out.object_scores is None else out.object_scores.cpu().numpy(),
        )

    def _check_prompts(
        self,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        state: _ImageState,
    ) -> tuple[int, torch.Tensor | None]:
        """Validates prompt shapes and values; returns P and the (possibly defaulted) labels."""
        h, w = state.original_size
        counts = {}
        if points is not None:
            if points.ndim != 3 or points.shape[-1] != 2:
                raise ValueError(f"points must be [P, N, 2] (or [N, 2]), got shape {tuple(points.shape)}")
            if points.shape[0] == 0 or points.shape[1] == 0:
                raise ValueError(f"points is empty (shape {tuple(points.shape)})")
            if labels is None:
                labels = torch.ones(points.shape[:2], dtype=torch.int64, device=points.device)
            if tuple(labels.shape) != tuple(points.shape[:2]):
                raise ValueError(f"labels must be [P, N] = {tuple(points.shape[:2])}, got shape {tuple(labels.shape)}")
            bad = ~torch.isin(labels, torch.tensor([-1, 0, 1], device=labels.device))
            if bad.any():
                raise ValueError(f"labels must be 1 (foreground), 0 (background) or -1 (ignore), got {labels[bad][0]}")
            if not torch.isfinite(points).all():
                raise ValueError("points contain NaN or infinite values")
            outside = (points[..., 0] < 0) | (points[..., 0] > w) | (points[..., 1] < 0) | (points[..., 1] > h)
            outside &= labels != -1
            if outside.any():
                p, n = (int(i) for i in outside.nonzero()[0])
                x, y = points[p, n].tolist()
                raise ValueError(f"point {n} of prompt {p} at (x={x:g}, y={y:g}) lies outside the {w}x{h} image")
            counts["points"] = points.shape[0]
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be [P, 4] (or [4]) XYXY, got shape {tuple(boxes.shape)}")
            if boxes.shape[0] == 0:
                raise ValueError("boxes is empty")
            if not torch.isfinite(boxes).all():
                raise ValueError("boxes contain NaN or infinite values")
            degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            outside = (boxes[:, :2] < 0).any(1) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
            for name, bad in (
                ("is empty (x1 <= x0 or y1 <= y0)", degenerate),
                (f"lies outside the {w}x{h} image", outside),
            ):
                if bad.any():
                    i = int(bad.nonzero()[0])
                    raise ValueError(f"box {i} {[round(v, 2) for v in boxes[i].tolist()]} {name}")
            counts["boxes"] = boxes.shape[0]
        if mask_input is not None:
            size = self.mask_input_size
            if mask_input.ndim != 4 or mask_input.shape[1] != 1 or tuple(mask_input.shape[2:]) != size:
                raise ValueError(
                    f"mask_input must be [P, 1, {size[0]}, {size[1]}], got shape {tuple(mask_input.shape)}"
                )
            if not torch.isfinite(mask_input).all():
                raise ValueError("mask_input contains NaN or infinite values")
            counts["mask_input"] = mask_input.shape[0]
        if not counts:
            raise ValueError("no prompt given: pass points, boxes and/or mask_input")
        if len(set(counts.values())) > 1:
            raise ValueError(f"prompt batch sizes disagree: {counts}")
        return next(iter(counts.values())), labels

    @torch.inference_mode()
    def predict_torch(
        self,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        *,
        multimask: bool = True,
        image_index: int = 0,
        return_masks: bool = True,
        min_iou: float | None = None,
        raw_logits: bool = False,
    ) -> MaskPrediction:
        """`predict` on tensors (any device), returning tensors on the predictor's device.

        Same frames and shapes as `predict`, with the batch dimension required. Prompts are decoded
        `prompt_batch_size` at a time; upsampling is chunked to bound memory. `raw_logits=True`
        returns the decoder's low-res logits without the frame's `logit_limit` clamp, for callers that
        upsample them as the official pipeline does (SAM 2.1's mask generator). With `min_iou`, a
        prompt whose every predicted IoU is at most `min_iou` may get -inf logits (masks not
        computed: the automatic mask generator's IoU filter drops them anyway).
        """
        state = self._state(image_index)
        count, labels = self._check_prompts(points, labels, boxes, mask_input, state)
        scale = torch.tensor(self.frame.prompt_scale(state.original_size), device=self.device)
        features = {key: value[image_index : image_index + 1] for key, value in self._features.items()}
        outputs = []
        for start in range(0, count, self.prompt_batch_size):
            chunk = slice(start, start + self.prompt_batch_size)
            point_prompt = None
            if points is not None:
                point_prompt = (points[chunk].to(self.device).float() * scale, labels[chunk].to(self.device))
            box_prompt = None if boxes is None else (boxes[chunk].to(self.device).float().reshape(-1, 2, 2) * scale)
            mask_prompt = None if mask_input is None else mask_input[chunk].to(self.device).float()
            with self._autocast():
                sparse, dense = self.model.embed_prompts(
                    point_prompt, None if box_prompt is None else box_prompt.reshape(-1, 4), mask_prompt
                )
                outputs.append(self.model.decode(features, sparse, dense, multimask, min_iou))
        low_res_logits = torch.cat([out.low_res_logits.float() for out in outputs])
        object_scores = None
        if outputs[0].object_scores is not None:
            object_scores = torch.cat([out.object_scores.float() for out in outputs])
        masks = (
            self.upsample(low_res_logits, image_index, threshold=self.model.mask_threshold) if return_masks else None
        )
        if self.frame.logit_limit is not None and not raw_logits:
            low_res_logits = low_res_logits.clamp(-self.frame.logit_limit, self.frame.logit_limit)
        return MaskPrediction(
            masks=masks,
            iou_scores=torch.cat([out.iou_scores.float() for out in outputs]),
            low_res_logits=low_res_logits,
            object_scores=object_scores,
        )

    def upsample(
        self, low_res_logits: torch.Tensor, image_index: int = 0, *, threshold: float | None = None
    ) -> torch.Tensor:
        """Low-res logits `[P, C, S, S]` -> logits `[P, C, H, W]` at image `image_index`'s original size.

        Equal (to float rounding) to the model family's official postprocessing (for SAM: resize to
        the padded input, crop and resize). With `threshold`, returns the bool masks
        `logits > threshold` (thresholded chunk by chunk, so the float maps never exist all at once).
        """
        state = self._state(image_index)
        h, w = state.original_size
        flat = low_res_logits.flatten(0, 1)  # [P * C, S, S]
        step = max(1, _UPSAMPLE_PIXELS // (h * w))
        if flat.shape[0] == 0:
            return flat.new_empty(
                (*low_res_logits.shape[:2], h, w), dtype=torch.bool if threshold is not None else None
            )
        out = None  # filled chunk by chunk: no second copy of the result
        for i in range(0, flat.shape[0], step):
            part = self.frame.upsample(flat[i : i + step], (h, w))
            part = part if threshold is None else part > threshold
            if out is None:
                out = part.new_empty((flat.shape[0], h, w))
            out[i : i + step] = part
        return out.reshape(*low_res_logits.shape[:2], h, w)
