"""The SAM network: image encoder, prompt encoder and mask decoder with input normalization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.image_encoder import ImageEncoderViT
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything. Submodule and parameter names are the official checkpoint's keys."""

    mask_threshold = 0.0

    def __init__(
        self, image_encoder: ImageEncoderViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Normalizes `[B, 3, h, w]` RGB 0..255 images (long side already resized) and pads them
        bottom/right with zeros to `[B, 3, S, S]`."""
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
