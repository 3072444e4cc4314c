"""EfficientViT-SAM: SAM's prompt encoder and mask decoder on an EfficientViT image encoder.

The image encoder is an EfficientViT-L/XL backbone (convolutional stages, then multi-scale ReLU
linear attention) and a neck that fuses three backbone stages into SAM's `[B, 256, 64, 64]`
embedding. The L models encode a 512-pixel image, the XL models a 1024-pixel one; prompts and
low-res masks stay in SAM's 1024 frame either way.

Module and parameter names are the official ones (mit-han-lab/efficientvit:
`efficientvit/models/efficientvit/{backbone,sam}.py`, `efficientvit/models/nn/ops.py`), so the
published `efficientvit_sam_*.pt` files load strictly. Every norm runs with eps 1e-6 (the decoder's
transformer too), as the official model zoo sets with `set_norm_eps(model, 1e-6)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.checkpoints import CheckpointInfo
from samtasks.modeling.common import LayerNorm2d
from samtasks.modeling.frame import ImageFrame
from samtasks.modeling.sam import Sam, sam_for

NORM_EPS = 1e-6  # the official zoo's eps for every BatchNorm and LayerNorm


class ConvLayer(nn.Module):
    """`conv` (same padding) -> `norm` (BatchNorm, if any) -> tanh-approximated GELU (if `act`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.norm = nn.BatchNorm2d(out_channels, eps=NORM_EPS) if norm else None
        self.act = nn.GELU(approximate="tanh") if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is None:
            x = self.conv(x)
        elif self.training:
            x = self.norm(self.conv(x))
        else:
            # Inference: the BatchNorm folded into the conv's weights, which saves a pass over the map.
            conv, norm = self.conv, self.norm
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            shift = norm.bias - norm.running_mean * scale
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            weight = conv.weight * scale[:, None, None, None]
            x = F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)
        if self.act is not None:
            x = self.act(x)
        return x


class OpSequential(nn.Module):
    """Modules applied in order (the official container; its `op_list` is part of the key names)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """`main(x) + x`, or `main(x)` alone for a stage's first (strided) block."""

    def __init__(self, main: nn.Module, *, shortcut: bool = True) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.shortcut else self.main(x)


# The local blocks. `fewer_norm` (the official `fewer_norm_list`): the convolutions before the last
# one have a bias and no BatchNorm. Hidden width: round(in_channels * expand_ratio).


class ResBlock(nn.Module):
    """3x3 conv -> GELU -> 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: float, fewer_norm: bool):
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.conv1 = ConvLayer(in_channels, mid, 3, stride, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.conv2 = ConvLayer(mid, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """3x3 conv (expanding) -> GELU -> 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: float, fewer_norm: bool):
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.spatial_conv = ConvLayer(in_channels, mid, 3, stride, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.point_conv = ConvLayer(mid, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """1x1 conv (expanding) -> GELU -> 3x3 depthwise conv -> GELU -> 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: float, fewer_norm: bool):
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.inverted_conv = ConvLayer(in_channels, mid, 1, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.point_conv = ConvLayer(mid, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


_LOCAL_BLOCKS: dict[str, type[nn.Module]] = {"res": ResBlock, "fmb": FusedMBConv, "mb": MBConv}


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention over all positions of a `[B, C, H, W]` map.

    q, k and v come from a 1x1 conv and, per scale, from a depthwise conv and a grouped 1x1 conv of
    it; each group of `dim` channels is one head. With relu kernels the attention is
    `v k^T q / (1^T k^T q)`, computed as `(v k^T) q` in O(HW d^2). The official code switches to
    `v (k^T q)` when HW <= dim: the same value, so one form serves every grid.
    """

    def __init__(self, channels: int, *, dim: int, scales: tuple[int, ...], eps: float = 1.0e-15) -> None:
        super().__init__()
        heads = channels // dim
        total_dim = heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvLayer(channels, 3 * total_dim, 1, norm=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total_dim, 3 * total_dim, scale, padding=scale // 2, groups=3 * total_dim, bias=False),
                nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=False),
            )
            for scale in scales
        )
        self.proj = ConvLayer(total_dim * (1 + len(scales)), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)  # [B, 3 * heads' * d, H, W]
        b, _, h, w = qkv.shape
        # The normalizing division needs float32 (as the official code keeps it under autocast).
        with torch.autocast(device_type=qkv.device.type, enabled=False):
            qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w)  # [B, heads', 3d, HW]
            q, k, v = qkv.split(self.dim, dim=2)  # each [B, heads', d, HW]
            q, k = F.relu(q), F.relu(k)
            v = F.pad(v, (0, 0, 0, 1), value=1.0)  # [B, heads', d + 1, HW]: the last row gives the normalizer
            out = (v @ k.transpose(-1, -2)) @ q  # [B, heads', d + 1, HW]
            out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return self.proj(out.reshape(b, -1, h, w).to(x.dtype))


class EfficientViTBlock(nn.Module):
    """Residual LiteMLA (context) then a residual MBConv (local)."""

    def __init__(self, channels: int, *, dim: int, expand_ratio: float, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim=dim, scales=scales))
        self.local_module = ResidualBlock(
            MBConv(channels, channels, stride=1, expand_ratio=expand_ratio, fewer_norm=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class EfficientViTLargeBackbone(nn.Module):
    """EfficientViT-L/XL: a stride-2 stem stage, then stages that each halve the resolution.

    Stage i's first block is a strided local block (`block_list[i]` if local, else "mb") with 4x
    `expand_list[i]`, without shortcut; `depth_list[i]` blocks of kind `block_list[i]` follow:
    "res", "fmb", "mb" (residual local blocks), "att" or "att@3" (EfficientViT blocks with 5x5 or
    3x3 aggregation).
    """

    def __init__(
        self,
        *,
        width_list: Sequence[int],
        depth_list: Sequence[int],
        block_list: Sequence[str],
        expand_list: Sequence[float],
        fewer_norm_list: Sequence[bool],
        qkv_dim: int,
    ) -> None:
        super().__init__()
        width = width_list[0]
        stem = [ConvLayer(3, width, 3, 2, act=True)]
        stem += [
            ResidualBlock(
                _LOCAL_BLOCKS[block_list[0]](
                    width, width, stride=1, expand_ratio=expand_list[0], fewer_norm=fewer_norm_list[0]
                )
            )
            for _ in range(depth_list[0])
        ]
        stages = [OpSequential(stem)]
        for i in range(1, len(width_list)):
            kind, expand, fewer_norm, out = block_list[i], expand_list[i], fewer_norm_list[i], width_list[i]
            down = _LOCAL_BLOCKS[kind if kind in ("mb", "fmb") else "mb"](
                width, out, stride=2, expand_ratio=expand * 4, fewer_norm=fewer_norm
            )
            ops = [ResidualBlock(down, shortcut=False)]
            for _ in range(depth_list[i]):
                if kind.startswith("att"):
                    scales = (3,) if kind == "att@3" else (5,)
                    ops.append(EfficientViTBlock(out, dim=qkv_dim, expand_ratio=expand, scales=scales))
                else:
                    block = _LOCAL_BLOCKS[kind](out, out, stride=1, expand_ratio=expand, fewer_norm=fewer_norm)
                    ops.append(ResidualBlock(block))
            stages.append(OpSequential(ops))
            width = out
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`[B, 3, S, S]` -> every stage's output; stage i is `[B, width_list[i], S / 2^(i+1), S / 2^(i+1)]`."""
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class UpSampleLayer(nn.Module):
    """Bicubic resize to `size` x `size` (align_corners=False); a no-op at that size already."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # as the official layer: bicubic weights overshoot in half precision
        return F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)


class SamNeck(nn.Module):
    """Fuses backbone stages into the SAM embedding.

    Each input stage gets a 1x1 conv to `head_width` and a bicubic resize to the embedding grid; the
    sum goes through `head_depth` residual FusedMBConv blocks and a 1x1 conv (with bias) to `out_dim`.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        head_width: int,
        head_depth: int,
        expand_ratio: float,
        out_dim: int,
        grid: int,
    ) -> None:
        super().__init__()
        self.input_ops = nn.ModuleList(
            OpSequential([ConvLayer(channels, head_width, 1), UpSampleLayer(grid)]) for channels in in_channels
        )
        self.middle = OpSequential(
            [
                ResidualBlock(
                    FusedMBConv(head_width, head_width, stride=1, expand_ratio=expand_ratio, fewer_norm=False)
                )
                for _ in range(head_depth)
            ]
        )
        self.output_ops = nn.ModuleList([OpSequential([ConvLayer(head_width, out_dim, 1, bias=True, norm=False)])])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """One `[B, C_i, h_i, w_i]` map per input -> `[B, out_dim, grid, grid]`."""
        fused = [op(x) for op, x in zip(self.input_ops, features, strict=True)]
        x = fused[-1]
        for y in reversed(fused[:-1]):
            x = y + x  # x0 + (x1 + x2), the official summation order
        return self.output_ops[0](self.middle(x))


class EfficientViTSamImageEncoder(nn.Module):
    """Backbone -> neck (fed with the stages `neck_stages`) -> LayerNorm2d."""

    def __init__(self, backbone: EfficientViTLargeBackbone, neck: SamNeck, *, neck_stages: Sequence[int], out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.norm = LayerNorm2d(out_dim, eps=NORM_EPS)
        self.neck_stages = tuple(neck_stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, S, S]` normalized, padded images -> `[B, out_dim, grid, grid]` embeddings."""
        if x.device.type == "cpu":
            # oneDNN runs these convolutions on channels-last maps without reordering each layer's
            # input and output: about 1.5x faster for the whole encoder on CPU.
            x = x.contiguous(memory_format=torch.channels_last)
        stages = self.backbone(x)
        return self.norm(self.neck([stages[i] for i in self.neck_stages])).contiguous()


@dataclass(frozen=True)
class EfficientViTSamSpec:
    """Architecture of one EfficientViT-SAM variant (and where its official weights live, if any).

    The backbone lists have one entry per stage, as the official `EfficientViTLargeBackbone` takes
    them. The embedding grid is `prompt_size / 16` (64 for the official models).
    """

    family: ClassVar[str] = "EfficientViT-SAM"
    license: ClassVar[str] = "Apache-2.0"
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    width_list: tuple[int, ...]
    depth_list: tuple[int, ...]
    block_list: tuple[str, ...]
    expand_list: tuple[float, ...]
    fewer_norm_list: tuple[bool, ...]
    neck_stages: tuple[int, ...]  # backbone stages fed to the neck, coarsest first (the official `fid_list`)
    neck_depth: int
    neck_expand_ratio: float
    encoder_size: int  # side of the encoder input: 512 (L) or 1024 (XL)
    prompt_size: int = 1024
    qkv_dim: int = 32
    neck_width: int = 256
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    checkpoint: CheckpointInfo | None = None

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official models)."""
        return self.prompt_size // 16

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits and of `mask_input` (256 for the official models)."""
        return 4 * self.embedding_size

    @property
    def frame(self) -> ImageFrame:
        # The official transform: PIL bilinear resize of the uint8 image, SAM's mean and std, zero
        # padding bottom/right; prompts and mask postprocessing in the `prompt_size` frame.
        return ImageFrame(encoder_size=self.encoder_size, prompt_size=self.prompt_size)

    @property
    def description(self) -> str:
        """The encoder in a few words, for `samtasks models`."""
        depths = "/".join(map(str, self.depth_list))
        return f"EfficientViT {self.width_list[0]}-{self.width_list[-1]}, depths {depths}"

    def build_image_encoder(self) -> EfficientViTSamImageEncoder:
        backbone = EfficientViTLargeBackbone(
            width_list=self.width_list,
            depth_list=self.depth_list,
            block_list=self.block_list,
            expand_list=self.expand_list,
            fewer_norm_list=self.fewer_norm_list,
            qkv_dim=self.qkv_dim,
        )
        neck = SamNeck(
            in_channels=[self.width_list[i] for i in self.neck_stages],
            head_width=self.neck_width,
            head_depth=self.neck_depth,
            expand_ratio=self.neck_expand_ratio,
            out_dim=self.prompt_embed_dim,
            grid=self.embedding_size,
        )
        return EfficientViTSamImageEncoder(backbone, neck, neck_stages=self.neck_stages, out_dim=self.prompt_embed_dim)

    def build(self) -> Sam:
        """An untrained model for this spec (on the current default device; `meta` works)."""
        return sam_for(self, self.build_image_encoder(), norm_eps=NORM_EPS)
