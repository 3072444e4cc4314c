"""The SAM mask decoder: two-way transformer, upscaling, 4 mask tokens and an IoU head."""

from __future__ import annotations

import torch
from torch import nn

from samtasks.modeling.common import MLP, LayerNorm2d
from samtasks.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits at 4x the embedding grid and their IoU from prompt embeddings.

    Mask token 0 is the single-mask output; tokens 1..3 are the multimask outputs.
    """

    num_mask_tokens = 4

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, iou_head_hidden_dim: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes P prompts against one image (or one image per prompt).

        Args:
            image_embeddings: `[1 or P, C, h, w]`.
            image_pe: `[1, C, h, w]`.
            sparse_prompt_embeddings: `[P, T, C]`.
            dense_prompt_embeddings: `[P, C, h, w]` (an expanded view when there is no mask input).
            multimask_output: return tokens 1..3 instead of token 0.

        Returns:
            Mask logits `[P, M, 4h, 4w]` and predicted IoU `[P, M]`, M = 3 or 1.
        """
        p = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # [5, C]
        tokens = torch.cat([output_tokens.expand(p, -1, -1), sparse_prompt_embeddings], dim=1)
        if dense_prompt_embeddings.stride(0) == 0:
            # Same dense embedding for every prompt: keep the image side at batch 1.
            src = image_embeddings + dense_prompt_embeddings[:1]
        else:
            src = image_embeddings + dense_prompt_embeddings
        hs, src = self.transformer(src, image_pe, tokens)
        if src.shape[0] != p:
            src = src.expand(p, -1, -1)
        b, c, h, w = p, image_embeddings.shape[1], image_embeddings.shape[2], image_embeddings.shape[3]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # [P, C/8, 4h, 4w]
        chosen = range(1, self.num_mask_tokens) if multimask_output else range(0, 1)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in chosen], dim=1)
        masks = (hyper_in @ upscaled.flatten(2)).reshape(b, len(chosen), 4 * h, 4 * w)
        iou_pred = self.iou_prediction_head(hs[:, 0])[:, chosen.start : chosen.stop]
        return masks, iou_pred
