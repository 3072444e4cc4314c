"""MobileSAM: SAM's prompt encoder and mask decoder on a TinyViT image encoder, and its spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from samtasks.checkpoints import CheckpointInfo
from samtasks.modeling.frame import ImageFrame
from samtasks.modeling.sam import Sam, sam_for
from samtasks.modeling.tiny_vit import TinyViT


@dataclass(frozen=True)
class MobileSamSpec:
    """Architecture of a MobileSAM variant: a 4-stage TinyViT and SAM's prompt encoder and decoder.

    The network is `Sam` with a `TinyViT` image encoder; its frame is SAM's (long side resized to
    `image_size`, SAM's normalization, zero padding), its embedding grid 1/16 of the input side.
    """

    family: ClassVar[str] = "MobileSAM"
    license: ClassVar[str] = "Apache-2.0"
    # TinyViT's classification head, kept in the official checkpoint, unused by the image path.
    ignored_keys: ClassVar[tuple[str, ...]] = ("image_encoder.norm_head.", "image_encoder.head.")

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_sizes: tuple[int, int, int, int]
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    image_size: int = 1024
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    checkpoint: CheckpointInfo | None = None

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official model)."""
        return self.image_size // 16

    @property
    def frame(self) -> ImageFrame:
        return ImageFrame(encoder_size=self.image_size, prompt_size=self.image_size)

    @property
    def description(self) -> str:
        """The encoder in a few words, for `samtasks models`."""
        return "TinyViT " + "/".join(str(d) for d in self.embed_dims)

    def build_image_encoder(self) -> TinyViT:
        return TinyViT(
            img_size=self.image_size,
            embed_dims=self.embed_dims,
            depths=self.depths,
            num_heads=self.num_heads,
            window_sizes=self.window_sizes,
            mlp_ratio=self.mlp_ratio,
            mbconv_expand_ratio=self.mbconv_expand_ratio,
            out_chans=self.prompt_embed_dim,
        )

    def build(self) -> Sam:
        """An untrained model for this spec (on the current default device)."""
        return sam_for(self, self.build_image_encoder())
