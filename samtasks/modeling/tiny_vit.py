"""TinyViT, the image encoder of MobileSAM and Light HQ-SAM.

Four stages at 1/4, 1/8 and twice 1/16 of the input side: a stage of MBConv blocks, then three
stages of windowed attention blocks (each followed by a depthwise convolution and an MLP), with a
patch-merging convolution between stages, and SAM's conv neck. Module and parameter names are those
of MobileSAM's `tiny_vit_sam.py`, so its checkpoints load strictly (the classification head
`norm_head`/`head` the image path never uses is left out; its keys are dropped before loading).

Tokens of the attention stages are kept as `[B, H, W, C]`; convolutions read them through a
permuted (channels-last) view, so no layout copy is made between attention and convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.modeling.common import LayerNorm2d
from samtasks.modeling.image_encoder import from_windows, to_windows


class Conv2dBN(nn.Sequential):
    """Bias-free convolution `c` followed by BatchNorm `bn`, run as one convolution with the
    batch-norm folded into its weight and bias (inference: running statistics)."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.c, self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # [Cout]
        weight = conv.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        if conv.kernel_size == (1, 1) and conv.groups == 1:
            # A pointwise convolution is a matrix product over channels; on channels-last input it
            # runs as one, faster on CPU than the convolution path.
            return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: `[B, 3, S, S]` -> `[B, C, S/4, S/4]`."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project) on `[B, C, H, W]`."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """1x1, 3x3 depthwise (stride 2, or 1 before MobileSAM's last stage) and 1x1 convolutions.

    `[B, C, H, W]` (channels-first or a permuted token view) -> tokens `[B, H', W', C']`.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.permute(0, 2, 3, 1)


class ConvLayer(nn.Module):
    """First stage: MBConv blocks, then patch merging. `[B, C, H, W]` -> tokens `[B, H/2, W/2, C']`."""

    def __init__(self, dim: int, depth: int, out_dim: int, *, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm feed-forward: LayerNorm, fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm multi-head attention in `window_size`-square windows with a learned bias per head
    and per absolute offset (|dy|, |dx|) between query and key.

    `qkv` is laid out per head as (q, k, v), each `dim // num_heads` wide. The bias table
    `attention_biases` `[heads, ws * ws]` is indexed by `|dy| * ws + |dx|`, the order in which the
    official model numbers the offsets.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        idxs = (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()  # [N, N]
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention core on projected windows: `[nW, ws, ws, 3C]` -> `[nW, ws, ws, C]` (before `proj`)."""
        nw, s1, s2, c3 = qkv.shape
        n, d = self.num_heads, c3 // 3 // self.num_heads
        q, k, v = qkv.reshape(nw, s1 * s2, n, 3 * d).transpose(1, 2).split(d, dim=-1)  # 3 x [nW, n, N, d]
        # A 4-D mask lets CPU attention take its fused kernel (a 3-D one falls back to the math path).
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)[None]  # [1, n, N, N]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [nW, n, N, d]
        return out.transpose(1, 2).reshape(nw, s1, s2, n * d)


class TinyViTBlock(nn.Module):
    """Windowed attention, a 3x3 depthwise convolution, and an MLP on tokens `[B, H, W, C]`."""

    def __init__(self, dim: int, num_heads: int, *, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official block pads the tokens with zeros before the attention's norm and qkv, and the
        # padded tokens stay in the windows as keys. qkv(norm(0)) is qkv(norm.bias): projecting
        # the real tokens, then padding with that constant, gives the same windows.
        attn = self.attn
        qkv = attn.qkv(attn.norm(x))  # [B, H, W, 3C]
        fill = attn.qkv(attn.norm.bias)
        windows, padded = to_windows(qkv, self.window_size, fill=fill)
        hw = (x.shape[1], x.shape[2])
        # proj is per token: applied to the windows, before the crop, it needs no contiguous copy.
        x = x + from_windows(attn.proj(attn.attend(windows)), self.window_size, padded, hw)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks, then patch merging unless it is the last stage."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        window_size: int,
        mlp_ratio: float,
        out_dim: int | None,
        stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size=window_size, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        self.downsample = None if out_dim is None else PatchMerging(dim, out_dim, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens `[B, H, W, C]` -> tokens `[B, H', W', C']`."""
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        return x


class TinyViT(nn.Module):
    """TinyViT image encoder: `[B, 3, S, S]` normalized padded images -> `[B, out_chans, S/16, S/16]`.

    MobileSAM's variant: the merge into the last stage keeps the resolution (stride 1), so the last
    two stages both run at 1/16 of the input side, SAM's embedding grid.

    Args:
        img_size: input side S.
        embed_dims: width of each of the 4 stages.
        depths: blocks per stage.
        num_heads: attention heads per stage (the first, convolutional, stage ignores its entry).
        window_sizes: attention window side per stage (the first entry is ignored likewise).
        mlp_ratio: MLP width over stage width in the attention blocks.
        mbconv_expand_ratio: hidden width over stage width in the MBConv blocks.
        out_chans: channels of the image embedding (the neck's output).
    """

    def __init__(
        self,
        *,
        img_size: int,
        embed_dims: tuple[int, ...],
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_sizes: tuple[int, ...],
        mlp_ratio: float,
        mbconv_expand_ratio: float,
        out_chans: int,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.early_dim = embed_dims[2]  # channels of `early_embeddings`
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        last = len(depths) - 1
        layers: list[nn.Module] = [ConvLayer(embed_dims[0], depths[0], embed_dims[1], expand_ratio=mbconv_expand_ratio)]
        for i in range(1, len(depths)):
            layers.append(
                BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    out_dim=embed_dims[i + 1] if i < last else None,
                    stride=1 if i + 1 == last else 2,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["image_embeddings"]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` -> `image_embeddings` `[B, out_chans, S/16, S/16]` and `early_embeddings`
        `[B, S/16, S/16, embed_dims[2]]`, the tokens after the second stage (Light HQ-SAM's early
        feature)."""
        # Channels-last convolutions: faster on CPU, and the attention stages' token layout.
        x = self.layers[0](self.patch_embed(x.contiguous(memory_format=torch.channels_last)))
        early = x = self.layers[1](x)
        for layer in self.layers[2:]:
            x = layer(x)
        return {"image_embeddings": self.neck(x.permute(0, 3, 1, 2)), "early_embeddings": early}
