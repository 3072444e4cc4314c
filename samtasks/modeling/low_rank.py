"""Per-prompt image tokens carried as the shared image tokens plus a small per-prompt part.

In the mask decoder every prompt starts from the same image tokens. Its first image->token
attention adds, per prompt, the attention-weighted values of a few prompt tokens: a matrix of rank
at most heads x tokens (SAM: 8 x 7 = 56 of 256 channels). A LayerNorm then scales each token's
row by its own statistics and each channel by a shared weight, and adds a shared bias. So after any
number of such updates the image tokens of prompt p are exactly

    Y_p = diag(a_p) S + U_p^T V_p        [N, C]

with S `[N, C]` shared by every prompt, a_p `[N]` a per-token scale, U_p `[r, N]` and V_p `[r, C]`
(r: 56 after one update, then growing by heads x tokens per update and by 1 per LayerNorm).
Every use of the image tokens in the decoder is linear in them (the projections of the attentions
and the first transposed convolution, then per-head products with a few prompt tokens), so S is
projected once for all prompts, the per-prompt part costs rank-r products, and no `[P, N, C]` tensor
is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DenseFactors:
    """Dense prompt embeddings `[P, C, h, w]` kept as their last 1x1 convolution's input and weights.

    SAM's mask input ends in a 1x1 convolution from k = 16 channels to C = 256, so every prompt's
    image tokens start as the shared image tokens (plus `bias`) and a rank-k part per prompt:
    coefficients `[P, k, N]` on the shared basis `weight^T [k, C]` (`LowRankTokens` form).

    Attributes:
        coefficients: `[P, k, h, w]`.
        weight: `[C, k]`.
        bias: `[C]`.
    """

    coefficients: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def dense(self) -> torch.Tensor:
        """`[P, C, h, w]`: the convolution itself (the same values the prompt encoder would give)."""
        return F.conv2d(self.coefficients, self.weight[:, :, None, None], self.bias)


class SharedMemo:
    """Results that depend on the shared image tokens only (their projections, centring, norm
    scaling), computed once for all the passes of one decode instead of once per pass of a few
    prompts. An entry is keyed by the tensor it was computed from and holds that tensor, so a key
    is never reused by another tensor."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Hashable], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, owner: torch.Tensor, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`compute()`, a function of `owner` and of `key` (modules, names) alone, once."""
        entry = self._entries.get((id(owner), key))
        if entry is None or entry[0] is not owner:
            entry = self._entries[(id(owner), key)] = (owner, compute())
        return entry[1]


@dataclass(frozen=True)
class LowRankTokens:
    """Image tokens `Y_p = diag(scale_p) shared + left_p^T right_p` of P prompts.

    Attributes:
        shared: `[N, C]`, the same for every prompt.
        scale: `[P, N]` per-token scale of `shared`, or None for all ones.
        left: `[P, r, N]`.
        right: `[P, r, C]`.
        memo: where the products of `shared` are kept for the other passes of the same decode.
    """

    shared: torch.Tensor
    scale: torch.Tensor | None
    left: torch.Tensor
    right: torch.Tensor
    memo: SharedMemo = field(default_factory=SharedMemo)

    @classmethod
    def update(
        cls, image: torch.Tensor, left: torch.Tensor, right: torch.Tensor, memo: SharedMemo | None = None
    ) -> LowRankTokens:
        """`image [N, C]` shared, plus `left^T right` per prompt (`[P, r, N]`, `[P, r, C]`)."""
        return cls(image, None, left, right, SharedMemo() if memo is None else memo)

    @property
    def num_prompts(self) -> int:
        return self.left.shape[0]

    def head_logits(self, rows: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Per-head products of `rows [P, heads, T, d]` with every token of `Y_p + extra`, the tokens
        being projected ones (`project`, D = heads x d) and `extra [N, D]` shared: `[P, heads, T, N]`.

        The shared parts are one batched product per head for all prompts' rows; the rank-r part is
        `(rows V_p^T) U_p` per prompt.
        """
        p, heads, t, d = rows.shape
        n = self.shared.shape[0]
        by_head = rows.transpose(0, 1).reshape(heads, p * t, d)
        shared = torch.bmm(by_head, self.shared.view(n, heads, d).permute(1, 2, 0)).view(heads, p, t, n)
        extra = torch.bmm(by_head, extra.view(n, heads, d).permute(1, 2, 0)).view(heads, p, t, n)
        out = rows.new_empty(p, heads, t, n)
        if self.scale is None:
            torch.add(extra.transpose(0, 1), shared.transpose(0, 1), out=out)
        else:
            torch.addcmul(extra.transpose(0, 1), shared.transpose(0, 1), self.scale[:, None, None, :], out=out)
        right = self.right.view(p, -1, heads, d).permute(0, 2, 3, 1)  # [P, heads, d, r]
        low = torch.matmul(rows, right).view(p, heads * t, -1)  # [P, heads * T, r]
        out.view(p, heads * t, n).baddbmm_(low, self.left)
        return out

    def head_pool(self, weights: torch.Tensor) -> torch.Tensor:
        """Per-head sums of the tokens (projected ones, D = heads x d) weighted by `weights [P, heads,
        T, N]`: `[P, T, heads, d]`."""
        p, heads, t, n = weights.shape
        d = self.shared.shape[1] // heads
        by_head = weights.new_empty(heads, p, t, n)
        if self.scale is None:
            by_head.copy_(weights.transpose(0, 1))
        else:
            torch.mul(weights.transpose(0, 1), self.scale[None, :, None, :], out=by_head)
        shared = torch.bmm(by_head.view(heads, p * t, n), self.shared.view(n, heads, d).transpose(0, 1))
        low = torch.bmm(weights.view(p, heads * t, n), self.left.transpose(1, 2))  # [P, heads * T, r]
        right = self.right.view(p, -1, heads, d)  # [P, r, heads, d]
        low = torch.einsum("phtr,prhe->pthe", low.view(p, heads, t, -1), right)
        return low.add_(shared.view(heads, p, t, d).permute(1, 2, 0, 3))

    def centred_shared(self) -> torch.Tensor:
        """`S0 = S - mean(S)` per token, `[N, C]`: `V0 S0^T = V S0^T` for any V (S0's rows sum to 0)."""
        return self.memo.get(self.shared, "centred", lambda: self.shared - self.shared.mean(1, keepdim=True))

    def layer_norm(
        self, norm: nn.LayerNorm, added: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
    ) -> LowRankTokens:
        """`norm` applied to every token of every prompt of `Y_p`, or of `Y_p + left_p^T right_p` for
        `added = (left [P, k, N], right [P, k, C], cross)`, exactly; the rank grows by k + 1.

        Centring: a row's mean is `a mean(S_n) + U_n mean(V)`, so the centred rows are
        `diag(a) S0 + U^T V0` with `S0 = S - mean(S)` (shared) and `V0 = V - mean(V)`. Their squared
        norms are `a^2 |S0_n|^2 + 2 a U_n . (V0 S0_n) + U_n^T (V0 V0^T) U_n`: one product of the shared
        S0 with every prompt's V0 and `[r, r]` Gram products. The result scales rows by
        `s = 1 / sqrt(var + eps)` and channels by the weight, and adds the bias as one more rank.
        The added rows are kept apart from the others until the result (no concatenated copy of
        the factors); their `cross` (`[P, k, N]`, consumed), if given, is `right S0^T`, computed by
        the caller from their structure (`Attention.output_cross`) for less than the `[k, C] x
        [C, N]` product.
        """
        p, _, n = self.left.shape
        c = self.shared.shape[1]
        shared = self.centred_shared()
        blocks = [(self.left, self.right, None)]
        if added is not None:
            blocks.append(added)
        blocks = [(left, right - right.mean(2, keepdim=True), cross) for left, right, cross in blocks if left.shape[1]]
        scale = torch.ones(p, n, dtype=shared.dtype, device=shared.device) if self.scale is None else self.scale
        squares = scale.square() * self.memo.get(shared, "squares", lambda: shared.square().sum(1))  # [P, N]
        for left, right, cross in blocks:
            if cross is None:
                cross = (right.reshape(-1, c) @ shared.T).view(p, -1, n)  # [P, k, N]: V0 S0^T
            inner = cross.mul_(2 * scale[:, None, :])
            for other_left, other_right, _ in blocks:
                inner.baddbmm_(right @ other_right.transpose(1, 2), other_left)
            squares += inner.mul_(left).sum(1)
        inv_std = torch.rsqrt(squares / c + norm.eps)
        weight = norm.weight
        rank = sum(left.shape[1] for left, _, _ in blocks)
        out = self.left.new_empty(p, rank + 1, n)
        start = 0
        for left, _, _ in blocks:
            torch.mul(left, inv_std[:, None, :], out=out[:, start : start + left.shape[1]])
            start += left.shape[1]
        out[:, rank] = 1
        right = torch.cat([*(right * weight for _, right, _ in blocks), norm.bias.expand(p, 1, c)], 1)
        normed = self.memo.get(shared, ("norm", norm), lambda: shared * weight)
        return LowRankTokens(normed, scale * inv_std, out, right, self.memo)

    def project(self, weight: torch.Tensor, key: Hashable | None = None) -> LowRankTokens:
        """Every token times `weight [C, D]`; with a `key` naming `weight` (its module), the shared
        part's product is kept in the memo for the other passes."""
        if key is None:
            shared = self.shared @ weight
        else:
            shared = self.memo.get(self.shared, ("project", key), lambda: self.shared @ weight)
        return LowRankTokens(shared, self.scale, self.left, self.right @ weight, self.memo)

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
