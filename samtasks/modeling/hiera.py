"""SAM 2's image encoder: the Hiera trunk and its FPN neck, image path only.

Hiera is a hierarchical ViT: a stride-4 patch embedding, then stages at strides 4, 8, 16 and 32
whose first block halves the grid by max-pooling its queries (and doubles width and heads).
Blocks attend within windows, except a few global ones. Tokens stay `[B, H, W, C]` between blocks,
as in the official model. The neck projects each stage to `d_model` channels and adds the
upsampled stride-32 map to the stride-16 one; the image path uses the stride 4, 8 and 16 maps.
The neck's sine position encodings feed only the video memory, so they are not computed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.common import MLP
from samtasks.modeling.image_encoder import from_windows, to_windows


def _pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 max pooling of `[B, H, W, C]` (odd sides floored, as `nn.MaxPool2d`)."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return torch.maximum(
        torch.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]), torch.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2])
    )


class MultiScaleAttention(nn.Module):
    """Self-attention whose queries are optionally max-pooled 2x2 (at a stage change)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, *, pool_queries: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_queries = pool_queries
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention core on projected tokens: `[B, h, w, 3C]` -> `[B, h', w', C]` (before `proj`),
        h' = h / 2 with query pooling."""
        b, h, w, c3 = qkv.shape
        n = self.num_heads
        q, k, v = qkv.reshape(b, h, w, 3, c3 // 3).unbind(3)  # 3 x [B, h, w, C]
        if self.pool_queries:
            q = _pool(q)
        hq, wq = q.shape[1:3]
        q = q.reshape(b, hq * wq, n, -1).transpose(1, 2)  # [B, n, h'w', d]
        k = k.reshape(b, h * w, n, -1).transpose(1, 2)  # [B, n, hw, d]
        v = v.reshape(b, h * w, n, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, n, h'w', d]
        return out.transpose(1, 2).reshape(b, hq, wq, -1)


class MultiScaleBlock(nn.Module):
    """Pre-norm Hiera block; `window_size` 0 means global attention, `pool` halves the grid."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, *, window_size: int, pool: bool) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.pool = pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, pool_queries=pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, 2, activation=F.gelu)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, H, W, dim]` -> `[B, H', W', dim_out]` (H' = H / 2 with pooling)."""
        normed = self.norm1(x)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = self.proj(normed)
        if self.pool:
            shortcut = _pool(shortcut)
        s = self.window_size
        if s == 0:
            y = self.attn.attend(self.attn.qkv(normed))
        else:
            if normed.shape[1] % s or normed.shape[2] % s:
                # qkv runs on the real tokens only; the window padding (the projection of the
                # official model's zero padding, i.e. the qkv bias) is added after it.
                windows, (hp, wp) = to_windows(self.attn.qkv(normed), s, fill=self.attn.qkv.bias)
            else:  # cutting the narrower input into windows moves a third of the data
                windows, (hp, wp) = to_windows(normed, s)
                windows = self.attn.qkv(windows)
            y = self.attn.attend(windows)  # [B * nW, s', s', C]
            step = 2 if self.pool else 1
            y = from_windows(y, s // step, (hp // step, wp // step), shortcut.shape[1:3])
        x = shortcut + self.attn.proj(y)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution -> tokens `[B, H/4, W/4, C]`."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The Hiera trunk: `[B, 3, S, S]` -> one `[B, C_i, S/s_i, S/s_i]` map per stage, s_i = 4, 8, 16, 32.

    Args:
        embed_dim: width of stage 1 (doubled at each stage change).
        num_heads: heads of stage 1 (doubled at each stage change).
        stages: blocks per stage (4 stages).
        global_att_blocks: indexes of the blocks with global attention.
        window_spec: window side per stage; a stage's first block uses the previous stage's.
        window_pos_embed_bkg_spatial_size: (h, w) of the learned background position embedding,
            resized bicubically to the token grid.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        stages: tuple[int, ...],
        global_att_blocks: tuple[int, ...],
        window_spec: tuple[int, ...],
        window_pos_embed_bkg_spatial_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        stage = 0
        for i in range(sum(stages)):
            dim_out = embed_dim
            # The window lags by a block: a stage's first block keeps the previous stage's window.
            window_size = 0 if i in global_att_blocks else window_spec[stage]
            pool = i - 1 in self.stage_ends[:-1]
            if pool:
                dim_out, num_heads, stage = 2 * embed_dim, 2 * num_heads, stage + 1
            self.blocks.append(MultiScaleBlock(embed_dim, dim_out, num_heads, window_size=window_size, pool=pool))
            embed_dim = dim_out

    @property
    def channel_list(self) -> list[int]:
        """Widths of the stage outputs, stage 4 first (the neck's `backbone_channel_list`)."""
        return [self.blocks[i].dim_out for i in reversed(self.stage_ends)]

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """`[1, h, w, C]`: the background embedding resized to the grid plus the tiled window one."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        window = self.pos_embed_window
        pos = pos + window.tile(1, 1, hw[0] // window.shape[2], hw[1] // window.shape[3])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # [B, H, W, C]
        x = x + self._pos_embed(x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """1x1 lateral convolutions to `d_model`; the stride-32 map, upsampled (nearest), joins the
    stride-16 one (the official configs' `fpn_top_down_levels=[2, 3]`)."""

    def __init__(self, *, d_model: int, backbone_channel_list: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)

    def lateral(self, level: int) -> nn.Conv2d:
        """The 1x1 convolution of stage map `level` (0: stride 4; `convs` run stride 32 first)."""
        return self.convs[len(self.convs) - 1 - level].conv

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Stage maps (stride 4 first) -> the `[B, d_model, S/16, S/16]` map (the stride-4 and
        stride-8 outputs are their lateral convolutions alone: `lateral`)."""
        up = F.interpolate(self.lateral(3)(xs[3]).float(), scale_factor=2.0, mode="nearest")
        return self.lateral(2)(xs[2]) + up


class ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck (names of the official checkpoint; `Sam2.encode` runs them)."""

    def __init__(self, trunk: Hiera, neck: FpnNeck) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
