"""The SAM image encoder: a plain ViT with windowed and global attention and a conv neck.

Tokens are kept as `[B, H, W, C]` (H, W = image_size / patch_size) between blocks, as in the
official model, so the checkpoint's `pos_embed` of shape `[1, H, W, C]` loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.common import LayerNorm2d, MLPBlock


def _relative_position_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """Embeddings of relative offsets for a `size`-long axis.

    Args:
        size: number of tokens along the axis (queries and keys alike).
        table: `[L, C]` learned embeddings of offsets -(L//2) .. L//2.

    Returns:
        `[size, size, C]`: entry (i, j) is the embedding of offset i - j.
    """
    length = 2 * size - 1
    if table.shape[0] != length:
        # Checkpoints trained at another resolution: resample the table linearly, as SAM does.
        table = F.interpolate(table.T[None], size=length, mode="linear")[0].T
    offsets = torch.arange(size, device=table.device)
    index = offsets[:, None] - offsets[None, :] + (size - 1)
    return table[index]


# Query chunks are sized so that one chunk's attention bias holds at most this many elements; the
# bias of a 64x64 global attention would otherwise take 4096^2 floats per head at once. On a CPU
# the chunk stays in cache; on a GPU it is large enough (1 GiB in float32) that few kernels run.
_BIAS_ELEMENTS_CPU = 1 << 22
_BIAS_ELEMENTS_GPU = 1 << 28


class Attention(nn.Module):
    """Multi-head self-attention with SAM's decomposed relative-position bias.

    The bias for query (qh, qw) and key (kh, kw) is `q . Rh[qh - kh] + q . Rw[qw - kw]` with the
    unscaled query; it enters `scaled_dot_product_attention` as the additive mask, built for one
    chunk of query rows at a time.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, h, w, C]` -> `[B, h, w, C]`."""
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention core on projected tokens: `[B, h, w, 3C]` -> `[B, h, w, C]` (before `proj`)."""
        b, h, w, c3 = qkv.shape
        n, d = self.num_heads, c3 // 3 // self.num_heads
        # 3 x [B, n, hw, d], each contiguous: the attention kernel would otherwise copy the keys and
        # values on every call (about 18% of a global block's attention here).
        q, k, v = qkv.reshape(b, h * w, 3, n, d).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        rh = _relative_position_table(h, self.rel_pos_h).to(q.dtype)  # [h, h, d]
        rw = _relative_position_table(w, self.rel_pos_w).to(q.dtype)  # [w, w, d]
        q_grid = q.reshape(b, n, h, w, d)
        bias_h = torch.einsum("bnhwd,hkd->bnhwk", q_grid, rh)  # [B, n, h, w, kh]
        bias_w = torch.einsum("bnhwd,wkd->bnhwk", q_grid, rw)  # [B, n, h, w, kw]
        out = q.new_empty(b, n, h * w, d)
        budget = _BIAS_ELEMENTS_CPU if q.device.type == "cpu" else _BIAS_ELEMENTS_GPU
        rows = max(1, budget // (b * n * w * h * w))
        for r0 in range(0, h, rows):
            r = min(rows, h - r0)
            parts = bias_h[:, :, r0 : r0 + r, :, :, None], bias_w[:, :, r0 : r0 + r, :, None, :]
            if torch.compiler.is_compiling():
                bias = parts[0] + parts[1]  # `out=` does not trace
            else:
                # A broadcast sum's own layout is not [B, n, r, w, h, w]: the reshape would copy it.
                bias = q.new_empty(b, n, r, w, h, w)
                torch.add(*parts, out=bias)
            queries = slice(r0 * w, (r0 + r) * w)
            out[:, :, queries] = F.scaled_dot_product_attention(
                q[:, :, queries], k, v, attn_mask=bias.reshape(b, n, r * w, h * w)
            )
        return out.transpose(1, 2).reshape(b, h, w, n * d)


def to_windows(x: torch.Tensor, size: int, fill: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads `[B, H, W, C]` to multiples of `size` and cuts it into `[B * nW, size, size, C]`.

    The official model pads the normed tokens with zeros before the qkv projection, and the padded
    tokens stay in the windows as keys; masking them out would change its outputs. Projecting
    first and padding with the projection of zero (`fill`, the qkv bias) gives the same values.
    """
    b, h, w, c = x.shape
    hp, wp = h + (-h % size), w + (-w % size)
    if (hp, wp) != (h, w):
        padded = x.new_zeros(b, hp, wp, c) if fill is None else fill.to(x.dtype).expand(b, hp, wp, c).clone()
        padded[:, :h, :w] = x
        x = padded
    x = x.reshape(b, hp // size, size, wp // size, size, c).transpose(2, 3)  # [B, nh, nw, s, s, C]
    return x.reshape(-1, size, size, c), (hp, wp)


def from_windows(x: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_windows`: `[B * nW, size, size, C]` -> `[B, H, W, C]` without padding."""
    hp, wp = padded
    c = x.shape[-1]
    x = x.reshape(-1, hp // size, wp // size, size, size, c).transpose(2, 3)  # [B, nh, s, nw, s, C]
    x = x.reshape(-1, hp, wp, c)
    return x[:, : hw[0], : hw[1]]


class Block(nn.Module):
    """Pre-norm transformer block; `window_size` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # qkv and proj run on the real tokens only; the window padding is added between them.
        qkv = self.attn.qkv(self.norm1(x))  # [B, H, W, 3C]
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            windows, padded = to_windows(qkv, self.window_size, fill=self.attn.qkv.bias)
            y = from_windows(self.attn.attend(windows), self.window_size, padded, hw)
        else:
            y = self.attn.attend(qkv)
        x = x + self.attn.proj(y)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens `[B, H/p, W/p, C]`."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """ViT image encoder: `[B, 3, S, S]` normalized padded images -> `[B, out_chans, S/p, S/p]`."""

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: tuple[int, ...],
        window_size: int,
        out_chans: int,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.early_dim = embed_dim  # channels of `early_embeddings`
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["image_embeddings"]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` -> `image_embeddings` `[B, out_chans, S/p, S/p]` and `early_embeddings`
        `[B, S/p, S/p, embed_dim]`, the tokens after the first global-attention block (SAM-HQ's
        early ViT feature)."""
        x = self.patch_embed(x) + self.pos_embed
        early = None
        for block in self.blocks:
            x = block(x)
            if early is None and block.window_size == 0:
                early = x
        return {"image_embeddings": self.neck(x.permute(0, 3, 1, 2)), "early_embeddings": early}
