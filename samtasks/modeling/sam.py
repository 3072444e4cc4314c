"""The SAM network (image encoder, prompt encoder, mask decoder) and its spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from samtasks.checkpoints import CheckpointInfo
from samtasks.modeling.frame import DecoderOutput, ImageFrame
from samtasks.modeling.image_encoder import ImageEncoderViT
from samtasks.modeling.low_rank import DenseFactors
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.transformer import TwoWayTransformer


class Sam(nn.Module):
    """Segment Anything. Submodule and parameter names are the official checkpoint's keys.

    Families that keep SAM's prompt encoder and decoder (MobileSAM, EfficientViT-SAM) are this class
    with another `image_encoder` and `frame`; see `samtasks.modeling.frame` for the interface every
    family's model class provides.
    """

    mask_threshold = 0.0
    num_multimask_outputs = 3

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        frame: ImageFrame | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.frame = frame or ImageFrame()

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """(S, S) of `mask_input` and of the low-res logits (256 for the official models)."""
        return self.prompt_encoder.mask_input_size

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` encoder input -> `{"image_embeddings": [B, C, h, w]}`."""
        return {"image_embeddings": self.image_encoder(images)}

    def embed_prompts(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | DenseFactors]:
        """Sparse `[P, T, C]` and dense `[P, C, h, w]` embeddings; coordinates in the prompt frame.
        A mask input's dense embedding stays `DenseFactors` where the decoder takes them."""
        factored = self.mask_decoder.takes_dense_factors
        return self.prompt_encoder(points, boxes, masks, factored=factored)

    def decode(
        self,
        features: dict[str, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor | DenseFactors,
        multimask: bool,
        min_iou: float | None = None,
    ) -> DecoderOutput:
        """Decodes P prompts against one image's features (batch 1)."""
        image_pe = self.prompt_encoder.get_dense_pe()
        low_res, iou = self.mask_decoder(features["image_embeddings"], image_pe, sparse, dense, multimask, min_iou)
        return DecoderOutput(low_res, iou)


@dataclass(frozen=True)
class SamSpec:
    """Architecture of one SAM variant (and where its official weights live, if any)."""

    family: ClassVar[str] = "SAM"
    license: ClassVar[str] = "Apache-2.0"
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    checkpoint: CheckpointInfo | None = None

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits and of `mask_input` (256 for the official models)."""
        return 4 * self.embedding_size

    @property
    def frame(self) -> ImageFrame:
        return ImageFrame(encoder_size=self.image_size, prompt_size=self.image_size)

    @property
    def description(self) -> str:
        """The encoder in a few words, for `samtasks models`."""
        return f"ViT {self.encoder_embed_dim}/{self.encoder_depth}/{self.encoder_num_heads}"

    def build_image_encoder(self) -> nn.Module:
        return ImageEncoderViT(
            img_size=self.image_size,
            patch_size=self.patch_size,
            embed_dim=self.encoder_embed_dim,
            depth=self.encoder_depth,
            num_heads=self.encoder_num_heads,
            global_attn_indexes=self.encoder_global_attn_indexes,
            window_size=self.window_size,
            out_chans=self.prompt_embed_dim,
        )

    def build(self) -> Sam:
        """An untrained model for this spec (on the current default device; `meta` works)."""
        return sam_for(self, self.build_image_encoder())


def prompt_encoder_for(spec) -> PromptEncoder:
    """SAM's prompt encoder for a spec with SAM's prompt fields (`prompt_embed_dim`, `mask_in_chans`,
    `embedding_size`, `frame`): every family that keeps SAM's prompt encoder and decoder."""
    grid = spec.embedding_size
    return PromptEncoder(
        embed_dim=spec.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(spec.frame.prompt_size, spec.frame.prompt_size),
        mask_in_chans=spec.mask_in_chans,
    )


def transformer_for(spec, *, norm_eps: float = 1e-5) -> TwoWayTransformer:
    """SAM's two-way transformer for a spec with SAM's decoder fields (`decoder_depth`,
    `decoder_num_heads`, `decoder_mlp_dim`, `prompt_embed_dim`)."""
    return TwoWayTransformer(
        depth=spec.decoder_depth,
        embedding_dim=spec.prompt_embed_dim,
        num_heads=spec.decoder_num_heads,
        mlp_dim=spec.decoder_mlp_dim,
        norm_eps=norm_eps,
    )


def sam_for(spec, image_encoder: nn.Module, *, norm_eps: float = 1e-5) -> Sam:
    """`image_encoder` under SAM's prompt encoder and mask decoder, in `spec`'s frame."""
    mask_decoder = MaskDecoder(
        transformer_dim=spec.prompt_embed_dim,
        transformer=transformer_for(spec, norm_eps=norm_eps),
        iou_head_hidden_dim=spec.iou_head_hidden_dim,
    )
    return Sam(image_encoder, prompt_encoder_for(spec), mask_decoder, frame=spec.frame)
