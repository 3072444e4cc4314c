"""The SAM-HQ mask decoder: SAM's decoder with a high-quality output token and fused features.

Names are those of sam-hq's `mask_decoder_hq.py`: `hf_token` (the HQ output token, after SAM's
IoU and mask tokens), `hf_mlp` (its hypernetwork), `compress_vit_feat` and `embedding_encoder`
(the early ViT feature and the image embedding, each upsampled 4x), `embedding_maskfeature` (a
refinement of SAM's upscaled embedding for the HQ mask).
"""

from __future__ import annotations

import torch
from torch import nn

from samtasks.modeling.common import MLP, LayerNorm2d
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.transformer import TwoWayTransformer


def _upsample4(in_chans: int, mid_chans: int, out_chans: int) -> nn.Sequential:
    """Two 2x2 stride-2 transposed convolutions with a LayerNorm2d and GELU between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_chans, mid_chans, kernel_size=2, stride=2),
        LayerNorm2d(mid_chans),
        nn.GELU(),
        nn.ConvTranspose2d(mid_chans, out_chans, kernel_size=2, stride=2),
    )


class MaskDecoderHQ(MaskDecoder):
    """SAM's mask decoder plus the HQ token; returns one mask per prompt.

    The mask is SAM's mask (token 0, or with multimask the one of tokens 1..3 with the highest
    predicted IoU) plus the HQ token's mask, or the HQ mask alone with `hq_token_only`; the IoU is
    that of the chosen SAM token (the HQ token has no IoU prediction).
    """

    takes_dense_factors = False

    def __init__(
        self, *, transformer_dim: int, transformer: TwoWayTransformer, iou_head_hidden_dim: int, vit_dim: int
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim, transformer=transformer, iou_head_hidden_dim=iou_head_hidden_dim
        )
        c = transformer_dim
        self.hf_token = nn.Embedding(1, c)
        self.hf_mlp = MLP(c, c, c // 8, 3)
        self.compress_vit_feat = _upsample4(vit_dim, c, c // 8)
        self.embedding_encoder = _upsample4(c, c // 4, c // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(c // 8, c // 4, 3, 1, 1),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c // 8, 3, 1, 1),
        )

    def output_tokens(self) -> torch.Tensor:
        """IoU token, the 4 mask tokens, then the HQ token: `[6, C]`."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight])

    def hq_features(self, image_embeddings: torch.Tensor, early_embeddings: torch.Tensor) -> torch.Tensor:
        """The prompt-independent HQ feature map `[B, C/8, 4h, 4w]` from the image embedding
        `[B, C, h, w]` and the early encoder tokens `[B, h, w, vit_dim]`.

        The official decoder recomputes it on every call; it depends on the image only, so the
        model computes it once per image, in `encode`.
        """
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_embeddings.permute(0, 3, 1, 2))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        *,
        hq_features: torch.Tensor,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes P prompts against one image.

        Args:
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings: as in
                `MaskDecoder.forward`.
            multimask_output: fuse the best of SAM's tokens 1..3 (by predicted IoU) instead of token 0.
            hq_features: `[1, C/8, 4h, 4w]` from `hq_features`.
            hq_token_only: return the HQ token's mask alone instead of its sum with SAM's mask.

        Returns:
            Mask logits `[P, 1, 4h, 4w]` and predicted IoU `[P, 1]`.
        """
        p = sparse_prompt_embeddings.shape[0]
        hs, src = self.run_transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        iou_pred = self.iou_prediction_head(hs[:, 0])  # [P, 4]
        hq_token = 1 + self.num_mask_tokens
        h, w = image_embeddings.shape[-2:]
        upscaled = self.output_upscaling(src.expand(p, -1, -1).transpose(1, 2).reshape(p, -1, h, w))  # [P, C/8, 4h, 4w]
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        hyper_hq = self.hf_mlp(hs[:, hq_token])[:, None]  # [P, 1, C/8]
        masks = (hyper_hq @ upscaled_hq.flatten(2)).view(p, 1, 4 * h, 4 * w)
        if multimask_output:
            iou, best = iou_pred[:, 1:].max(dim=1)  # [P]; ties go to the first token, as in torch.max
            iou = iou[:, None]
        else:
            iou, best = iou_pred[:, :1], None
        if not hq_token_only:
            if best is None:
                hyper_sam = self.output_hypernetworks_mlps[0](hs[:, 1])[:, None]  # [P, 1, C/8]
            else:
                hyper_all = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in (1, 2, 3)], dim=1)
                hyper_sam = hyper_all[torch.arange(p, device=best.device), best][:, None]
            masks = masks + (hyper_sam @ upscaled.flatten(2)).view(p, 1, 4 * h, 4 * w)
        return masks, iou
