"""The two-way transformer of the SAM mask decoder.

Prompt tokens (queries, `[P, T, C]`) and image tokens (keys, `[B, HW, C]`) attend to each other.
While the image tokens are the same for every prompt (no mask input), they are carried with batch 1
and broadcast, so the image-side projections of the first layer run once instead of P times. Once
they differ per prompt, the attentions between a prompt's few tokens and its many image tokens fold
the image-side projections into the tokens' (`Attention.tokens_to_image`, `image_to_tokens`): no
`[P, HW, C/r]` projection is ever computed, and no per-head permute of an image-sized tensor.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.common import MLP, MLPBlock
from samtasks.modeling.low_rank import LowRankTokens, SharedMemo


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width.

    Batch dimensions of q, k and v broadcast against each other. Between the few prompt tokens and
    the many image tokens, `tokens_to_image` and `image_to_tokens` compute the same attention with
    the image side's projections folded into the tokens' (see their docstrings).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal_dim = embedding_dim // downsample_rate
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # [B, heads, N, d]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, Nq, d]
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))

    def folds(self, tokens: int) -> bool:
        """Whether folding is cheaper: heads x tokens below the internal width (SAM: 8 x 7 < 128)."""
        return self.num_heads * tokens < self.q_proj.out_features

    def _fold(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """Per-head rows of `proj`'s weight weighted by `x [P, T, heads * d]`: `[P, heads * T, C]`,
        so that `(proj(y) . x)` per head is `y @ result.T` (plus the bias term)."""
        p, t, _ = x.shape
        weight = proj.weight.reshape(self.num_heads, -1, proj.in_features)  # [heads, d, C]
        return torch.einsum("pthe,hec->phtc", x.reshape(p, t, self.num_heads, -1), weight).flatten(1, 2)

    def tokens_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`forward` for token queries `q [P, T, C]` over per-prompt image keys and values `k, v [P, N, C]`.

        The image tokens are never projected: a logit is `(Wk k + bk) . q'` = `k . (Wk^T q')` plus
        `bk . q'`, constant along the softmax axis and so dropped; the attention-weighted sum of
        `Wv v + bv` is `Wv` applied to the weighted sum of `v`, plus `bv` (the weights sum to 1).
        Per prompt this is two `[N, C] x [C, heads * T]` products instead of two `[N, C] x [C, C/r]`.
        """
        weights = torch.bmm(self._folded_queries(q), k.transpose(1, 2)).softmax(-1)  # [P, heads * T, N]
        return self._pooled_output(torch.bmm(weights, v))

    def tokens_to_low_rank(self, q: torch.Tensor, image: LowRankTokens, pe: torch.Tensor) -> torch.Tensor:
        """`forward` for token queries `q [P, T, C]` with keys `image + pe` and values `image`, the
        image tokens of every prompt in `LowRankTokens` form and `pe [N, C]` shared: their shared
        part is projected once for all prompts (the key bias is dropped: it is constant along the
        softmax axis; the value bias is added after pooling: the weights sum to 1)."""
        scale = (self.q_proj.out_features // self.num_heads) ** -0.5
        rows = self._heads(self.q_proj(q) * scale)  # [P, heads, T, d]
        keys = image.project(self.k_proj.weight.T, self.k_proj)
        weights = keys.head_logits(rows, _projected_pe(image, pe, self.k_proj)).softmax(-1)  # [P, heads, T, N]
        pooled = image.project(self.v_proj.weight.T, self.v_proj).head_pool(weights)  # [P, T, heads, d]
        return self.out_proj(pooled.flatten(2) + self.v_proj.bias)

    def _folded_queries(self, q: torch.Tensor) -> torch.Tensor:
        """`[P, heads * T, C]`: the scaled query projection folded into the key projection."""
        scale = (self.q_proj.out_features // self.num_heads) ** -0.5
        return self._fold(self.q_proj(q) * scale, self.k_proj)

    def _pooled_output(self, pooled: torch.Tensor) -> torch.Tensor:
        """Value and output projections of the attention-weighted image tokens `[P, heads * T, C]`."""
        p = pooled.shape[0]
        pooled = pooled.view(p, self.num_heads, -1, pooled.shape[-1])  # [P, heads, T, C]
        w_v = self.v_proj.weight.view(self.num_heads, -1, self.v_proj.in_features)  # [heads, d, C]
        out = torch.einsum("phtc,hec->pthe", pooled, w_v).flatten(2) + self.v_proj.bias  # [P, T, C/r]
        return self.out_proj(out)

    def image_to_tokens(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """`residual + forward(x, k, v)` for image queries `x [B, N, C]` (B = 1 or P) over the tokens
        `k, v [P, T, C]`: `[P, N, C]`. See `image_to_tokens_update`."""
        weights, projected = self.image_to_tokens_update(x, k, v)
        return torch.baddbmm(residual, weights.transpose(1, 2), projected)

    def image_to_tokens_update(
        self, x: torch.Tensor | LowRankTokens, k: torch.Tensor, v: torch.Tensor, pe: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward(x (+ pe), k, v)` for image queries over the tokens `k, v [P, T, C]` as the product
        `weights^T projected` of the attention weights `[P, heads * T, N]` and `[P, heads * T, C]`.

        `x` is `[B, N, C]` (B = 1 or P), or every prompt's image tokens in `LowRankTokens` form with
        `pe [N, C]` added. The image tokens are never projected: a logit is `(Wq x + bq) . k'` =
        `x . (Wq^T k')` plus `bq . k'` (kept: it varies along the softmax axis); the output
        projection of the attention-weighted values is one `[N, heads * T] x [heads * T, C]` product
        with the projected values `Wo v'` of each head and token, whose rows carry `bo / heads` (each
        head's weights sum to 1). Logits are laid out `[heads, T, N]`, so the softmax over T is
        vectorized along N.
        """
        p, t, _ = k.shape
        heads = self.num_heads
        scale = (self.q_proj.out_features // heads) ** -0.5
        keys = self.k_proj(k) * scale  # [P, T, C/r]
        folded_k = self._fold(keys, self.q_proj)  # [P, heads * T, C]
        offset = (keys.view(p, t, heads, -1) * self.q_proj.bias.view(heads, -1)).sum(-1).transpose(1, 2)
        offset = offset.reshape(p, heads * t, 1)
        if isinstance(x, LowRankTokens):
            # The image side's shared part projected once: per-head products with the token keys.
            rows = keys.view(p, t, heads, -1).transpose(1, 2)  # [P, heads, T, d]
            queries = x.project(self.q_proj.weight.T, self.q_proj)
            logits = queries.head_logits(rows, _projected_pe(x, pe, self.q_proj)).add_(offset.view(p, heads, t, 1))
        elif x.shape[0] == 1:
            # One product for all prompts.
            logits = torch.addmm(offset.flatten(0, 1), folded_k.flatten(0, 1), x[0].T).view(p, heads, t, -1)
        else:
            logits = torch.baddbmm(offset, folded_k, x.transpose(1, 2)).view(p, heads, t, -1)
        weights = logits.softmax(2).view(p, heads * t, -1)  # [P, heads * T, N]
        values = self.v_proj(v).view(p, t, heads, -1)
        w_o = self.out_proj.weight.view(self.out_proj.out_features, heads, -1)  # [C, heads, d]
        projected = torch.einsum("pthe,che->phtc", values, w_o) + self.out_proj.bias / heads  # [P, heads, T, C]
        return weights, projected.flatten(1, 2)

    def output_cross(self, v: torch.Tensor, image: LowRankTokens) -> torch.Tensor:
        """The rows `projected` of `image_to_tokens_update` (values `v [P, T, C]`) times `S0^T`, the
        centred shared tokens of `image` (`[N, C]`): `[P, heads * T, N]`. A row is one head's value
        through that head's `d` columns of the output projection (plus `bo / heads`), so the product
        goes through `Wo_h^T S0^T` (`[heads, d, N]`, shared by every prompt): a `d`-long
        contraction per row instead of `C`."""
        p, t, _ = v.shape
        heads = self.num_heads
        values = self.v_proj(v).view(p, t, heads, -1)  # [P, T, heads, d]
        w_o = self.out_proj.weight.view(self.out_proj.out_features, heads, -1)  # [C, heads, d]
        shared = image.centred_shared()
        basis = image.memo.get(shared, ("cross", self), lambda: torch.einsum("che,nc->hen", w_o, shared))
        out = torch.bmm(values.permute(2, 0, 1, 3).reshape(heads, p * t, -1), basis)  # [heads, P * T, N]
        bias = image.memo.get(shared, ("cross bias", self), lambda: (shared @ self.out_proj.bias) / heads)  # [N]
        return out.view(heads, p, t, -1).transpose(0, 1).add(bias).flatten(1, 2)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, token->image, MLP on tokens, image->token."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
        mlp_names: str,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        if mlp_names == "layers":
            self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2)
        else:
            self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self._self_attention(queries, query_pe)
        q, k = queries + query_pe, keys + key_pe
        queries = self._token_mlp(queries + _tokens_to_image(self.cross_attn_token_to_image, q, k, keys))

        q = queries + query_pe
        attn = self.cross_attn_image_to_token
        if attn.folds(q.shape[1]):
            keys = attn.image_to_tokens(k, q, queries, residual=keys)
        else:
            keys = keys + attn(k, q, queries)
        keys = self.norm4(keys)
        return queries, keys

    def forward_low_rank(
        self,
        queries: torch.Tensor,
        keys: LowRankTokens,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, LowRankTokens]:
        """`forward` with every prompt's image tokens in `LowRankTokens` form and `key_pe [N, C]`."""
        queries = self._self_attention(queries, query_pe)
        update = self.cross_attn_token_to_image.tokens_to_low_rank(queries + query_pe, keys, key_pe)
        queries = self._token_mlp(queries + update)
        attn = self.cross_attn_image_to_token
        weights, projected = attn.image_to_tokens_update(keys, queries + query_pe, queries, key_pe)
        cross = attn.output_cross(queries, keys)  # the new rows' part of the norm's statistics
        return queries, keys.layer_norm(self.norm4, (weights, projected, cross))

    def _self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        if self.skip_first_layer_pe:
            # The first layer's queries are the prompt embeddings themselves, which already
            # carry their positional encoding.
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        return self.norm1(queries)

    def _token_mlp(self, queries: torch.Tensor) -> torch.Tensor:
        """norm2 of the tokens after their attention to the image, then the MLP and norm3."""
        queries = self.norm2(queries)
        return self.norm3(queries + self.mlp(queries))


class TwoWayTransformer(nn.Module):
    """Stack of two-way blocks followed by a final token->image attention.

    `mlp_names` only names the token MLP's two linear layers as the checkpoint does: `lin1`/`lin2`
    (SAM) or `layers.0`/`layers.1` (SAM 2); the computation is the same. `norm_eps` is SAM's
    LayerNorm default (1e-5); EfficientViT-SAM's model zoo sets 1e-6.
    """

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        mlp_names: Literal["lin", "layers"] = "lin",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
                mlp_names=mlp_names,
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the transformer.

        Args:
            image_embedding: `[B, C, h, w]`, B = 1 (shared by all prompts) or P.
            image_pe: `[1, C, h, w]` positional encoding of the image grid.
            point_embedding: `[P, T, C]` prompt tokens.

        Returns:
            Updated tokens `[P, T, C]` and image tokens `[P, hw, C]`.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)  # [B, hw, C]
        key_pe = image_pe.flatten(2).transpose(1, 2)  # [1, hw, C]
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + _tokens_to_image(self.final_attn_token_to_image, q, k, keys))
        return queries, keys

    def forward_low_rank(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        per_prompt: tuple[torch.Tensor, torch.Tensor] | None = None,
        memo: SharedMemo | None = None,
    ) -> tuple[torch.Tensor, LowRankTokens]:
        """`forward` for an image `[1, C, h, w]` shared by every prompt, plus `left_p^T right` per
        prompt if `per_prompt = (left [P, k, hw], right [k, C])` is given (a mask input's embedding),
        the image tokens returned in `LowRankTokens` form (see `samtasks.modeling.low_rank`);
        requires `folds(T)`. Passes over more prompts with the same image and `memo` compute the
        image side's products once."""
        p = point_embedding.shape[0]
        memo = SharedMemo() if memo is None else memo
        image = memo.get(image_embedding, "tokens", lambda: image_embedding[0].flatten(1).T.contiguous())  # [hw, C]
        key_pe = memo.get(image_pe, "tokens", lambda: image_pe[0].flatten(1).T)  # [hw, C]
        if per_prompt is None:
            # Rank 0: the image tokens shared by every prompt.
            per_prompt = image.new_empty(p, 0, image.shape[0]), image.new_empty(0, image.shape[1])
        left, right = per_prompt
        keys = LowRankTokens.update(image, left, right.expand(p, -1, -1), memo)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer.forward_low_rank(queries, keys, point_embedding, key_pe)
        update = self.final_attn_token_to_image.tokens_to_low_rank(queries + point_embedding, keys, key_pe)
        return self.norm_final_attn(queries + update), keys

    def folds(self, tokens: int) -> bool:
        """Whether every attention between `tokens` prompt tokens and the image folds."""
        return len(self.layers) > 0 and self.final_attn_token_to_image.folds(tokens)


def _tokens_to_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Token->image attention: the image side projected once while it is shared by several prompts,
    else folded into the prompt tokens where that is cheaper."""
    p, t, c = q.shape
    if k.shape[0] == 1 < p:
        # Queries attend independently: all prompts' tokens as one sequence against the shared image.
        return attn(q.reshape(1, p * t, c), k, v).view(p, t, c)
    if attn.folds(t):
        return attn.tokens_to_image(q, k, v)
    return attn(q, k, v)


def _projected_pe(image: LowRankTokens, pe: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
    """`pe [N, C]` through `proj`'s weight (no bias), once per memo."""
    return image.memo.get(pe, ("project", proj), lambda: pe @ proj.weight.T)
