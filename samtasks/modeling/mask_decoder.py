"""The SAM mask decoder: two-way transformer, upscaling, 4 mask tokens and an IoU head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        hs, src = self.run_transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        chosen = range(1, self.num_mask_tokens) if multimask_output else range(0, 1)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in chosen], dim=1)
        masks = self._upscale_and_project(src.expand(p, -1, -1), hyper_in, image_embeddings.shape[-2:])
        iou_pred = self.iou_prediction_head(hs[:, 0])[:, chosen.start : chosen.stop]
        return masks, iou_pred

    def output_tokens(self) -> torch.Tensor:
        """`[K, C]` learned output tokens that precede the prompt tokens: IoU, then the 4 mask tokens."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight])

    def run_transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer on `output_tokens()` and the prompt tokens (shapes as in `forward`).

        Returns:
            Tokens `[P, K + T, C]` (output tokens first) and image tokens `[P, hw, C]`.
        """
        p = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat([self.output_tokens().expand(p, -1, -1), sparse_prompt_embeddings], dim=1)
        if dense_prompt_embeddings.stride(0) == 0:
            # Same dense embedding for every prompt: keep the image side at batch 1.
            src = image_embeddings + dense_prompt_embeddings[:1]
        else:
            src = image_embeddings + dense_prompt_embeddings
        return self.transformer(src, image_pe, tokens)

    def _upscale_and_project(
        self,
        src: torch.Tensor,
        hyper_in: torch.Tensor,
        grid: tuple[int, int],
        high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`output_upscaling` and the hypernetwork product, computed on tokens.

        A 2x2 stride-2 transposed convolution maps each token to a 2x2 block independently, so it is
        one matrix product on the `[P, hw, C]` tokens; the norm and the activations are per pixel;
        and the final product with `hyper_in` contracts channels, so no `[P, C, 4h, 4w]` NCHW
        tensor is ever laid out. Same result as the module applied to the image layout.

        Args:
            src: `[P, hw, C]` image tokens from the transformer.
            hyper_in: `[P, M, C/8]` per-mask weights.
            grid: (h, w).
            high_res: SAM 2's encoder features added after each transposed convolution, in this
                method's layouts: `s0 [1, 4hw, 2, 2, C/8]` (each 2h x 2w cell's 2x2 block, rows
                row-major) and `s1 [1, 4hw, C/4]` (the 2h x 2w grid row-major).

        Returns:
            Mask logits `[P, M, 4h, 4w]`.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        h, w = grid
        p, m = hyper_in.shape[:2]

        def transposed_conv(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
            """`[P, N, Cin]` -> `[P, N, 2, 2, Cout]` (each token's 2x2 output block)."""
            weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # [Cin, (i, j, Cout)]
            y = torch.addmm(conv.bias.repeat(4), x.flatten(0, 1), weight)  # autocast-aware
            return y.reshape(x.shape[0], x.shape[1], 2, 2, -1)

        y = transposed_conv(src, up1)  # [P, hw, 2, 2, C/4]
        y = y.reshape(p, h, w, 2, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(p, 4 * h * w, -1)  # [P, 2h*2w, C/4]
        if high_res is not None:
            y = y + high_res[1]
        y = act1(F.layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps))
        z = transposed_conv(y, up2)  # [P, 4hw, 2, 2, C/8], rows (2h, 2w) row-major
        if high_res is not None:
            z = z + high_res[0]
        z = act2(z)
        masks = z.reshape(p, -1, z.shape[-1]) @ hyper_in.transpose(1, 2).to(z.dtype)  # [P, 16hw, M]
        masks = masks.reshape(p, 2 * h, 2 * w, 2, 2, m).permute(0, 5, 1, 3, 2, 4)  # [P, M, 2h, i, 2w, j]
        return masks.reshape(p, m, 4 * h, 4 * w)
