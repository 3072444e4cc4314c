"""What every SAM-family network shares with the predictor: its image frame and its decoder output.

A family differs from SAM in how an image becomes encoder input (size, resize rule, padding,
normalization), in the frame its prompts and low-res masks live in, and in what its decoder
returns. `ImageFrame` holds the first two, so `SamPredictor` maps original-image pixels to and from
any family without asking which one it serves; `DecoderOutput` holds the third.

Every model class (`Sam`, and each family's) provides:

- `frame: ImageFrame`, `mask_threshold: float`, `num_multimask_outputs: int` (masks per prompt
  with multimask output: 3 for SAM, 1 for a family that fuses its outputs);
- `encode(images [B, 3, S, S]) -> dict[str, Tensor]`: image features, each `[B, ...]`; the key
  `image_embeddings` is the `[B, C, h, w]` embedding every family has;
- `embed_prompts(points, boxes, masks) -> (sparse [P, T, C], dense [P, C, h, w])`: points as
  `([P, N, 2], [P, N])` and boxes `[P, 4]` in the prompt frame, masks `[P, 1, S', S']` logits
  (a family may return a mask input's `dense` in another form that only its own `decode` reads:
  SAM's and SAM 2's `DenseFactors`);
- `decode(features, sparse, dense, multimask, min_iou=None) -> DecoderOutput` for one image's
  features (each entry sliced to batch 1); with `min_iou`, a prompt whose every predicted IoU is at
  most `min_iou` may come back with -inf logits, its masks not computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from samtasks.utils.image import resized_shape
from samtasks.utils.resize import upsample_logits

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageFrame:
    """How images and prompts reach a network, and how its low-res masks return.

    `resize="longest"` (SAM, SAM-HQ, MobileSAM, EfficientViT-SAM): the long side is resized to
    `encoder_size` (aspect kept), the image normalized and zero-padded bottom/right to a square.
    Prompts and masks live in a second such frame of side `prompt_size` (equal to `encoder_size`
    except for EfficientViT-SAM's 512-pixel L models, whose prompts stay in the 1024 frame); masks
    return through that padded square, cropped to the image and resized to the original size.

    `resize="square"` (SAM 2.1): the image is stretched to `encoder_size` squared; prompts are
    scaled per axis into the `prompt_size` square, and masks are resized straight to the original
    size. With `logit_limit`, the low-res logits handed back to callers are clamped to
    [-limit, limit] (SAM 2.1's predictor), after the masks have been upsampled from the raw ones.
    """

    encoder_size: int = 1024  # side of the square encoder input
    prompt_size: int = 1024  # side of the square frame of prompts and of the low-res masks' extent
    resize: Literal["longest", "square"] = "longest"
    resample: Literal["pil", "antialias"] = "pil"  # pil: PIL bilinear on uint8; antialias: torch on 0..1 floats
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN  # on the 0..255 scale
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    logit_limit: float | None = None  # clamp of the returned low-res logits (SAM 2.1: 32)

    def resized_shape(self, original_size: tuple[int, int], side: int) -> tuple[int, int]:
        """(h, w) of an image of `original_size` (H, W) inside a `side` frame."""
        if self.resize == "square":
            return side, side
        return resized_shape(*original_size, side)

    def prompt_scale(self, original_size: tuple[int, int]) -> tuple[float, float]:
        """(sx, sy) mapping original (x, y) pixels into the prompt frame."""
        h, w = self.resized_shape(original_size, self.prompt_size)
        return w / original_size[1], h / original_size[0]

    def encoder_input(self, image: np.ndarray, device: torch.device) -> torch.Tensor:
        """`uint8 [H, W, 3]` RGB -> the normalized, padded encoder input `float32 [3, S, S]`."""
        h, w = self.resized_shape(image.shape[:2], self.encoder_size)
        mean = torch.tensor(self.pixel_mean, dtype=torch.float64).view(3, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=torch.float64).view(3, 1, 1)
        if self.resample == "pil":
            resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))  # SAM's input transform
            x = torch.from_numpy(resized).to(device).permute(2, 0, 1).float()  # [3, h, w]
        else:
            # SAM 2.1's ToTensor, Resize and Normalize: resized and normalized on the 0..1 scale.
            x = torch.from_numpy(image).to(device).permute(2, 0, 1).float()[None] / 255.0  # [1, 3, H, W]
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
            mean, std = mean / 255.0, std / 255.0
        x = (x - mean.float().to(device)) / std.float().to(device)
        return F.pad(x, (0, self.encoder_size - w, 0, self.encoder_size - h))

    def upsample(self, low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits `[..., S, S]` -> logits `[..., H, W]` at `original_size`, as the family's
        official postprocessing computes them (to float rounding)."""
        if self.resize == "square":
            return upsample_logits(low_res_logits, padded_size=None, input_size=None, original_size=original_size)
        return upsample_logits(
            low_res_logits,
            padded_size=self.prompt_size,
            input_size=self.resized_shape(original_size, self.prompt_size),
            original_size=original_size,
        )


@dataclass
class DecoderOutput:
    """One decoder call on P prompts with M masks each, in the low-res frame."""

    low_res_logits: torch.Tensor  # [P, M, S, S], the prompt frame at 1/4 of the embedding stride
    iou_scores: torch.Tensor  # [P, M] predicted IoU
    object_scores: torch.Tensor | None = None  # [P] object-presence logits, for families that predict it
