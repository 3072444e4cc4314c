"""Per-prompt image tokens carried as the shared image tokens plus a small per-prompt part.

In the mask decoder every prompt starts from the same image tokens. Its first image->token
attention adds, per prompt, the attention-weighted values of a few prompt tokens: a matrix of rank
at most heads x tokens (SAM: 8 x 7 = 56 of 256 channels). A LayerNorm then scales each token's
row by its own statistics and each channel by a shared weight, and adds a shared bias. So after any
number of such updates the image tokens of prompt p are exactly

    Y_p = diag(a_p) S + U_p^T V_p        [N, C]

with S `[N, C]` shared by every prompt, a_p `[N]` a per-token scale, U_p `[r, N]` and V_p `[r, C]`
(r: 56 after one update, then growing by heads x tokens per update and by 1 per LayerNorm).
Every use of the image tokens in the decoder is a product with a few token-sized rows (attention
logits and pooling, the first transposed convolution), so it runs as one product with the shared S
for all prompts plus rank-r products per prompt, and no `[P, N, C]` tensor is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LowRankTokens:
    """Image tokens `Y_p = diag(scale_p) shared + left_p^T right_p` of P prompts.

    Attributes:
        shared: `[N, C]`, the same for every prompt.
        scale: `[P, N]` per-token scale of `shared`, or None for all ones.
        left: `[P, r, N]`.
        right: `[P, r, C]`.
    """

    shared: torch.Tensor
    scale: torch.Tensor | None
    left: torch.Tensor
    right: torch.Tensor

    @classmethod
    def update(cls, image: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> LowRankTokens:
        """`image [N, C]` shared, plus `left^T right` per prompt (`[P, r, N]`, `[P, r, C]`)."""
        return cls(image, None, left, right)

    @property
    def num_prompts(self) -> int:
        return self.left.shape[0]

    def plus(self, left: torch.Tensor, right: torch.Tensor) -> LowRankTokens:
        """`Y_p + left_p^T right_p`: the rank grows by `left.shape[1]`."""
        return LowRankTokens(
            self.shared, self.scale, torch.cat([self.left, left], 1), torch.cat([self.right, right], 1)
        )

    def dot(self, rows: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`rows [P, m, C]` against every token: `rows_p (Y_p + extra)^T` `[P, m, N]`, where `extra
        [N, C]` is shared (the positional encoding)."""
        p, m, c = rows.shape
        flat = rows.reshape(p * m, c)
        out = (flat @ self.shared.T).view(p, m, -1)
        if self.scale is not None:
            out.mul_(self.scale[:, None, :])
        if extra is not None:
            out.view(p * m, -1).addmm_(flat, extra.T)
        return out.baddbmm_(torch.bmm(rows, self.right.transpose(1, 2)), self.left)

    def pool(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights [P, m, N]` summing tokens: `weights_p Y_p` `[P, m, C]`."""
        p, m, n = weights.shape
        scaled = weights if self.scale is None else weights * self.scale[:, None, :]
        out = (scaled.reshape(p * m, n) @ self.shared).view(p, m, -1)
        return out.baddbmm_(torch.bmm(weights, self.left.transpose(1, 2)), self.right)

    def layer_norm(self, norm: nn.LayerNorm) -> LowRankTokens:
        """`norm` applied to every token of every prompt, exactly.

        Centring: a row's mean is `a mean(S_n) + U_n mean(V)`, so the centred rows are
        `diag(a) S0 + U^T V0` with `S0 = S - mean(S)` (shared) and `V0 = V - mean(V)`. Their squared
        norms are `a^2 |S0_n|^2 + 2 a U_n . (V0 S0_n) + U_n^T (V0 V0^T) U_n`: one product of the shared
        S0 with every prompt's V0 and `[r, r]` Gram products. The result scales rows by
        `s = 1 / sqrt(var + eps)` and channels by the weight, and adds the bias as one more rank.
        """
        p, r, n = self.left.shape
        c = self.shared.shape[1]
        shared = self.shared - self.shared.mean(1, keepdim=True)
        right = self.right - self.right.mean(2, keepdim=True)
        scale = torch.ones(p, n, dtype=shared.dtype, device=shared.device) if self.scale is None else self.scale
        cross = (right.reshape(p * r, c) @ shared.T).view(p, r, n)  # [P, r, N]: V0 S0^T
        inner = cross.mul_(2 * scale[:, None, :]).baddbmm_(right @ right.transpose(1, 2), self.left)
        squares = inner.mul_(self.left).sum(1) + scale.square() * shared.square().sum(1)  # [P, N]
        inv_std = torch.rsqrt(squares / c + norm.eps)
        weight = norm.weight
        left = self.left.new_empty(p, r + 1, n)
        torch.mul(self.left, inv_std[:, None, :], out=left[:, :r])
        left[:, r] = 1
        right = torch.cat([right * weight, norm.bias.expand(p, 1, c)], 1)
        return LowRankTokens(shared * weight, scale * inv_std, left, right)

    def project(self, weight: torch.Tensor) -> LowRankTokens:
        """Every token times `weight [C, D]`."""
        return LowRankTokens(self.shared @ weight, self.scale, self.left, self.right @ weight)

    def rows(self, prompt: int, start: int, stop: int, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens `start:stop` of one prompt plus `offset [C]` if given, materialized: `[stop - start, C]`."""
        left, right = self.left[prompt, :, start:stop].T, self.right[prompt]
        out = torch.mm(left, right) if offset is None else torch.addmm(offset, left, right)
        if self.scale is None:
            return out.add_(self.shared[start:stop])
        return out.addcmul_(self.shared[start:stop], self.scale[prompt, start:stop, None])

    def dense(self) -> torch.Tensor:
        """All tokens `[P, N, C]` (tests and the paths that need them materialized)."""
        return torch.stack([self.rows(i, 0, self.left.shape[2]) for i in range(self.num_prompts)])
