"""The SAM mask decoder: two-way transformer, upscaling, 4 mask tokens and an IoU head."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.common import MLP, LayerNorm2d
from samtasks.modeling.low_rank import DenseFactors, LowRankTokens, SharedMemo
from samtasks.modeling.transformer import TwoWayTransformer

# Image tokens upscaled per step: on the CPU 1 prompt of the official models, keeping the
# intermediates in cache; on a GPU 64 prompts (about 0.8 GB of intermediates), so that kernel
# launches do not dominate.
_UPSCALE_TOKENS_CPU = 4096
_UPSCALE_TOKENS_GPU = 64 * 4096
# Image tokens of one prompt upscaled per step from `LowRankTokens` (whole rows of the grid).
_UPSCALE_ROWS_TOKENS = 4096
# Prompts x image tokens per pass of the low-rank path (16 prompts of the official models): bounds the
# `[P, r, hw]` factors (r about 114) and the `[P, heads x T, hw]` logits, which then stay in a 32 MB
# cache (256 prompts decoded 4-15% faster here than with 32 per pass).
_LOW_RANK_TOKENS = 16 * 4096


class MaskDecoder(nn.Module):
    """Predicts mask logits at 4x the embedding grid and their IoU from prompt embeddings.

    Mask token 0 is the single-mask output; tokens 1..3 are the multimask outputs.
    """

    num_mask_tokens = 4
    # Whether `forward` accepts a mask input's embedding as `DenseFactors` (see `Sam.embed_prompts`).
    takes_dense_factors = True

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
        dense_prompt_embeddings: torch.Tensor | DenseFactors,
        multimask_output: bool,
        min_iou: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes P prompts against one image (or one image per prompt).

        Args:
            image_embeddings: `[1 or P, C, h, w]`.
            image_pe: `[1, C, h, w]`.
            sparse_prompt_embeddings: `[P, T, C]`.
            dense_prompt_embeddings: `[P, C, h, w]` (an expanded view when there is no mask input),
                or a mask input's `DenseFactors`.
            multimask_output: return tokens 1..3 instead of token 0.
            min_iou: a prompt whose every predicted IoU is at most this gets no mask logits (-inf):
                the upscaling, most of a prompt's work, is skipped for it.

        Returns:
            Mask logits `[P, M, 4h, 4w]` and predicted IoU `[P, M]`, M = 3 or 1.
        """
        p, t = sparse_prompt_embeddings.shape[:2]
        image, mask_inputs, dense = self.low_rank_start(
            image_embeddings, dense_prompt_embeddings, self.num_mask_tokens + 1 + t
        )
        if image is not None:
            return self._decode_low_rank(
                image, image_pe, sparse_prompt_embeddings, multimask_output, min_iou, mask_inputs
            )
        hs, src = self.run_transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense)
        hyper_in, iou_pred = self._heads(hs, multimask_output)
        keep = None if min_iou is None else (iou_pred > min_iou).any(1)
        masks = self.upscale_and_project(src.expand(p, -1, -1), hyper_in, image_embeddings.shape[-2:], keep=keep)
        return masks, iou_pred

    def low_rank_start(
        self, image_embeddings: torch.Tensor, dense: torch.Tensor | DenseFactors, tokens: int
    ) -> tuple[torch.Tensor | None, DenseFactors | None, torch.Tensor | DenseFactors]:
        """Which path `forward` takes with `tokens` output and prompt tokens per prompt:
        `(image, mask_inputs, dense)`. For the low-rank path `image` is `[1, C, h, w]` with the shared
        dense embedding (or the mask factors' bias) added and `mask_inputs` the factors, if any; for the
        per-prompt path `image` is None and `dense` a `[P or 1, C, h, w]` tensor. The low-rank path
        needs the CPU (on a GPU the per-prompt path's large batched products are faster than its
        many small ones), one image, folding attentions, and float32 products for the carried
        LayerNorm statistics (autocast would give bfloat16)."""
        low_rank = (
            image_embeddings.device.type == "cpu"
            and image_embeddings.shape[0] == 1
            and not torch.is_autocast_enabled(image_embeddings.device.type)
            and self.transformer.folds(tokens)
        )
        if isinstance(dense, DenseFactors):
            if low_rank:
                return image_embeddings + dense.bias.view(1, -1, 1, 1), dense, dense
            dense = dense.dense()
        if low_rank and (dense.shape[0] == 1 or dense.stride(0) == 0):
            return image_embeddings + dense[:1], None, dense
        return None, None, dense

    def _heads(self, hs: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Hypernetwork weights `[P, M, C/8]` and predicted IoU `[P, M]` from the output tokens."""
        chosen = range(1, self.num_mask_tokens) if multimask_output else range(0, 1)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in chosen], dim=1)
        return hyper_in, self.iou_prediction_head(hs[:, 0])[:, chosen.start : chosen.stop]

    def _decode_low_rank(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        multimask_output: bool,
        min_iou: float | None,
        mask_inputs: DenseFactors | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` for an image `[1, C, h, w]` (dense embedding added) shared by every prompt, and
        each prompt's mask embedding `mask_inputs` if given (its bias added to `image`), on
        `low_rank_passes`."""
        p = sparse.shape[0]
        h, w = image.shape[-2:]
        m = self.num_mask_tokens - 1 if multimask_output else 1
        dtype = torch.promote_types(image.dtype, torch.float32)
        masks = torch.empty(p, m, 4 * h, 4 * w, dtype=dtype, device=image.device)
        ious = []
        for chunk, hs, keys in self.low_rank_passes(image, image_pe, sparse, self.output_tokens(), mask_inputs):
            hyper_in, iou_pred = self._heads(hs, multimask_output)
            keep = None if min_iou is None else (iou_pred > min_iou).any(1)
            self._upscale_low_rank(keys, hyper_in, (h, w), keep, out=masks[chunk])
            ious.append(iou_pred)
        return masks, torch.cat(ious)

    def low_rank_passes(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        output_tokens: torch.Tensor,
        mask_inputs: DenseFactors | None = None,
    ) -> Iterator[tuple[slice, torch.Tensor, LowRankTokens]]:
        """The transformer on `output_tokens [K, C]` and the prompt tokens `sparse [P, T, C]` against an
        image `[1, C, h, w]` shared by every prompt (plus each prompt's `mask_inputs`), a bounded number
        of prompts per pass: yields `(prompts, tokens [p, K + T, C], image tokens as LowRankTokens)`."""
        p = sparse.shape[0]
        h, w = image.shape[-2:]
        step = max(1, _LOW_RANK_TOKENS // (h * w))
        memo = SharedMemo()
        for s in range(0, p, step):
            chunk = sparse[s : s + step]
            tokens = torch.cat([output_tokens.expand(len(chunk), -1, -1), chunk], dim=1)
            start = None
            if mask_inputs is not None:
                start = mask_inputs.coefficients[s : s + step].flatten(2), mask_inputs.weight.T
            hs, keys = self.transformer.forward_low_rank(image, image_pe, tokens, start, memo)
            yield slice(s, s + step), hs, keys

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

    def upscale_and_project(
        self,
        src: torch.Tensor,
        hyper_in: torch.Tensor,
        grid: tuple[int, int],
        high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`output_upscaling` and the hypernetwork product, computed on tokens, a few prompts at a time.

        A 2x2 stride-2 transposed convolution maps each token to a 2x2 block independently, so it is
        one matrix product on the `[P, hw, C]` tokens; the norm and the activations are per pixel;
        and the final product with `hyper_in` contracts channels. So every step runs in the token
        layout (`[hw, 2, 2, C/4]`, then `[hw, 2, 2, 2, 2, C/8]`: each token's 4x4 block) and only the
        `[M, 4h, 4w]` logits are laid out as an image. Same result as the module on the NCHW layout.

        Args:
            src: `[P, hw, C]` image tokens from the transformer.
            hyper_in: `[P, M, C/8]` per-mask weights.
            grid: (h, w).
            high_res: SAM 2's encoder features added after each transposed convolution, in this
                method's token layouts: `s0 [1, 4hw, 2, 2, C/8]` and `s1 [1, 4hw, C/4]`, rows
                (r, c, i, j) for pixel (2r + i, 2c + j) of the 2h x 2w grid, s0's (k, l) the 2x2
                block of that pixel on the 4h x 4w grid.
            keep: `bool [P]`, the prompts to compute (default all); the others' logits are -inf.

        Returns:
            Mask logits `[P, M, 4h, 4w]`.
        """
        up1 = self.output_upscaling[0]
        h, w = grid
        p, m = hyper_in.shape[:2]
        w1 = up1.weight.permute(0, 2, 3, 1).flatten(1)  # [C, (i, j, C/4)]
        b1 = up1.bias.repeat(4)
        dtype = torch.promote_types(src.dtype, torch.float32)
        if keep is None:
            out = torch.empty(p, m, 4 * h, 4 * w, dtype=dtype, device=src.device)
            prompts = torch.arange(p, device=src.device)
        else:
            out = torch.full((p, m, 4 * h, 4 * w), -torch.inf, dtype=dtype, device=src.device)
            prompts = keep.nonzero()[:, 0]
        blocks = out.view(p, m, h, 2, 2, w, 2, 2)  # [P, M, h, i, k, w, j, l]: row 4r + 2i + k, col 4c + 2j + l
        budget = _UPSCALE_TOKENS_CPU if src.device.type == "cpu" else _UPSCALE_TOKENS_GPU
        step = max(1, budget // (h * w))
        for s in range(0, len(prompts), step):
            chunk = prompts[s : s + step]
            x = src[s : s + step] if keep is None else src[chunk]
            c = x.shape[0]
            y = torch.addmm(b1, x.flatten(0, 1), w1).view(c, -1, up1.out_channels)  # [c, hw * 4, C/4], autocast-aware
            z = self._finish_upscaling(y, high_res)  # [c, 16hw, C/8]
            weights = hyper_in[chunk].to(z.dtype)
            if c == 1:
                masks = _hyper_product(z[0], weights[0])[None]
            else:
                masks = torch.bmm(weights, z.transpose(1, 2))  # [c, M, 16hw]
            blocks[chunk] = masks.to(dtype).view(c, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return out

    def _finish_upscaling(
        self, y: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The rest of `output_upscaling` in the token layout: from the first transposed
        convolution's output `y [..., 4n, C/4]` (bias added) for n tokens to `[..., 16n, C/8]`, each
        token's 4x4 block; `high_res`: SAM 2's s0 `[.., 4n, 2, 2, C/8]` and s1 `[.., 4n, C/4]` rows of
        the same tokens (`upscale_and_project`'s layouts)."""
        _, norm, act1, up2, act2 = self.output_upscaling
        if high_res is not None:
            y = y + high_res[1]
        y = act1(F.layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps))
        w2 = up2.weight.permute(0, 2, 3, 1).flatten(1)  # [C/4, (k, l, C/8)]
        z = torch.addmm(up2.bias.repeat(4), y.flatten(0, -2), w2).view(*y.shape[:-1], -1)  # autocast-aware
        if high_res is not None:
            z = z + high_res[0].flatten(-3)
        return act2(z).view(*y.shape[:-2], -1, up2.out_channels)

    def _upscale_low_rank(
        self,
        image: LowRankTokens,
        hyper_in: torch.Tensor,
        grid: tuple[int, int],
        keep: torch.Tensor | None,
        out: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """`upscale_and_project` for image tokens in `LowRankTokens` form, into `out [P, M, 4h, 4w]`
        (`high_res` as there).

        The first transposed convolution is linear per token, so it applies to the shared tokens
        once and to each prompt's rank-r part; each prompt's tokens are then materialized a few
        rows of the grid at a time (sized for cache) through the norm, the second convolution and
        the hypernetwork product.
        """
        up1 = self.output_upscaling[0]
        h, w = grid
        p, m = hyper_in.shape[:2]
        w1 = up1.weight.permute(0, 2, 3, 1).flatten(1)  # [C, (i, j, C/4)]
        if keep is None:
            prompts = range(p)
        else:
            out[~keep] = -torch.inf
            prompts = keep.nonzero()[:, 0].tolist()
        blocks = out.view(p, m, h, 2, 2, w, 2, 2)  # [P, M, h, i, k, w, j, l]: row 4r + 2i + k, col 4c + 2j + l
        upscaled = image.project(w1, up1)  # tokens [N, (i, j, C/4)]
        b1 = up1.bias.repeat(4)
        step = max(1, _UPSCALE_ROWS_TOKENS // w)
        for prompt in prompts:
            weights = hyper_in[prompt].to(out.dtype)
            for r0 in range(0, h, step):
                rows = min(step, h - r0)
                y = upscaled.rows(prompt, r0 * w, (r0 + rows) * w, b1).view(-1, up1.out_channels)  # [(n, i, j), C/4]
                tokens = slice(4 * r0 * w, 4 * (r0 + rows) * w)
                z = self._finish_upscaling(
                    y, None if high_res is None else (high_res[0][0, tokens], high_res[1][0, tokens])
                )
                masks = _hyper_product(z, weights)  # [M, (n, i, j, k, l)]
                blocks[prompt, :, r0 : r0 + rows] = masks.view(m, rows, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)


def _hyper_product(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`weights [M, C/8]` times the upscaled tokens `z [n, C/8]`: `[M, n]`, as M matrix-vector
    products (an `[n, C/8] x [C/8, 3]` matrix product is several times slower on the CPU)."""
    masks = z.new_empty(len(weights), z.shape[0])
    for j, weight in enumerate(weights):
        torch.mv(z, weight, out=masks[j])
    return masks
