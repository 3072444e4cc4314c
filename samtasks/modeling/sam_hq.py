"""SAM-HQ (HQ-SAM): a SAM network whose decoder adds a high-quality output token, and its spec.

SAM-HQ keeps SAM's (or MobileSAM's, for Light HQ-SAM) image encoder and prompt encoder; its
decoder (`MaskDecoderHQ`) also reads an early encoder feature and returns one fused mask per
prompt, with multimask output too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from samtasks.checkpoints import CheckpointInfo
from samtasks.modeling.frame import DecoderOutput, ImageFrame
from samtasks.modeling.mask_decoder_hq import MaskDecoderHQ
from samtasks.modeling.mobile_sam import MobileSamSpec
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.sam import Sam, SamSpec, prompt_encoder_for, transformer_for


class SamHQ(Sam):
    """HQ-SAM. Submodule and parameter names are the official checkpoint's keys.

    With multimask output it still returns one mask per prompt (`num_multimask_outputs = 1`): the
    SAM mask of highest predicted IoU among tokens 1..3, fused with the HQ mask, as the official
    model does.

    Args:
        image_encoder: an encoder with `forward_features` returning `image_embeddings` and
            `early_embeddings` (`ImageEncoderViT`, `TinyViT`).
        prompt_encoder, mask_decoder, frame: as for `Sam`.
        hq_token_only: return the HQ token's mask alone instead of its sum with SAM's mask
            (official default False; the authors' demos suggest False for images of many objects,
            such as COCO's, and True for images of a single object). An attribute, so it can be
            switched on a built model.
    """

    num_multimask_outputs = 1

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoderHQ,
        *,
        frame: ImageFrame | None = None,
        hq_token_only: bool = False,
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, frame=frame)
        self.hq_token_only = hq_token_only

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` encoder input -> `image_embeddings` `[B, C, h, w]` and `hq_features`
        `[B, C/8, 4h, 4w]` (the decoder's prompt-independent HQ feature map)."""
        features = self.image_encoder.forward_features(images)
        embeddings = features["image_embeddings"]
        return {
            "image_embeddings": embeddings,
            "hq_features": self.mask_decoder.hq_features(embeddings, features["early_embeddings"]),
        }

    def decode(
        self,
        features: dict[str, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
        min_iou: float | None = None,
    ) -> DecoderOutput:
        """Decodes P prompts against one image's features (batch 1): one mask `[P, 1, S, S]` each.
        `min_iou` is accepted for the interface; every prompt's mask is computed."""
        low_res, iou = self.mask_decoder(
            features["image_embeddings"],
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask,
            hq_features=features["hq_features"],
            hq_token_only=self.hq_token_only,
        )
        return DecoderOutput(low_res, iou)


@dataclass(frozen=True)
class HqSpec:
    """HQ-SAM on the SAM (`SamSpec`) or MobileSAM (`MobileSamSpec`, Light HQ-SAM) network `sam`.

    Frame, encoder and prompt encoder are `sam`'s; `checkpoint` is the HQ-SAM file (`sam`'s own
    checkpoint is not used).
    """

    family: ClassVar[str] = "SAM-HQ"
    license: ClassVar[str] = "Apache-2.0"

    sam: SamSpec | MobileSamSpec
    checkpoint: CheckpointInfo | None = None

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        # The official model loads its files non-strictly and Hugging Face's conversion of them drops
        # `pixel_mean`/`pixel_std`: dropped here too where present (normalization is the frame's).
        return (*self.sam.ignored_keys, "pixel_mean", "pixel_std")

    @property
    def frame(self) -> ImageFrame:
        return self.sam.frame

    @property
    def description(self) -> str:
        """The encoder in a few words, for `samtasks models`."""
        return f"{self.sam.description} + HQ token"

    def build(self) -> SamHQ:
        """An untrained model for this spec (on the current default device; `meta` works for ViT)."""
        sam = self.sam
        image_encoder = sam.build_image_encoder()
        mask_decoder = MaskDecoderHQ(
            transformer_dim=sam.prompt_embed_dim,
            transformer=transformer_for(sam),
            iou_head_hidden_dim=sam.iou_head_hidden_dim,
            vit_dim=image_encoder.early_dim,
        )
        return SamHQ(image_encoder, prompt_encoder_for(sam), mask_decoder, frame=sam.frame)
