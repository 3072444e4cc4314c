"""SAM's mask upsampling (low-res -> padded input -> crop -> original) as one banded linear map.

The official postprocessing interpolates every mask bilinearly to the padded square input
(1024 x 1024), crops the padding and interpolates again to the original size. Both steps are
linear and separable, so each output row (column) is a fixed combination of at most a few
adjacent low-res rows (columns). Composing the two steps once per image size gives the same
values without the large intermediate.
"""

from __future__ import annotations

import functools

import torch


def bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """`float64 [out, in]`: PyTorch's 1-D bilinear resize with `align_corners=False`."""
    dst = torch.arange(out_size, dtype=torch.float64)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    frac = src - i0
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix[rows, i0] += 1.0 - frac
    matrix[rows, i1] += frac
    return matrix


@functools.lru_cache(maxsize=64)
def _blocked_map(
    low_res: int, padded: int | None, valid: int | None, out: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The composed 1-D map cut into blocks of `block` output rows (`padded=None`: one resize).

    Returns:
        index `int64 [nb, K]`: the K consecutive low-res rows block b reads;
        weights `float32 [nb, block, K]`: how block b's rows combine them (rows past `out` are 0).
    """
    if padded is None:
        composed = bilinear_matrix(low_res, out)  # [out, low_res]
    else:
        composed = bilinear_matrix(valid, out) @ bilinear_matrix(low_res, padded)[:valid]
    nb = -(-out // block)
    composed = torch.cat([composed, composed.new_zeros(nb * block - out, low_res)]).reshape(nb, block, low_res)
    used = (composed != 0).any(1)  # [nb, low_res]
    first = used.float().argmax(1)
    last = low_res - 1 - used.flip(1).float().argmax(1)
    width = int((last - first).max()) + 1
    index = first.clamp(max=low_res - width)[:, None] + torch.arange(width)  # [nb, K]
    weights = composed.gather(2, index[:, None, :].expand(nb, block, width))
    return index, weights.float()


def _resize_rows(x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, out: int) -> torch.Tensor:
    """Applies a blocked map along dim -2: `[..., S, C]` -> `[..., out, C]`."""
    nb, k = index.shape
    gathered = x.index_select(-2, index.flatten().to(x.device))  # [..., nb * K, C]
    gathered = gathered.unflatten(-2, (nb, k))  # [..., nb, K, C]
    y = weights.to(device=x.device, dtype=x.dtype) @ gathered  # [..., nb, block, C]
    return y.flatten(-3, -2)[..., :out, :]


def upsample_logits(
    logits: torch.Tensor,
    *,
    padded_size: int | None,
    input_size: tuple[int, int] | None,
    original_size: tuple[int, int],
    block: int = 32,
) -> torch.Tensor:
    """Low-res logits `[..., S, S]` -> logits `[..., H, W]` at the original image size.

    Args:
        logits: mask logits in the low-res frame of the padded square model input.
        padded_size: side of the padded model input (1024); None resizes the logits straight to
            `original_size` (SAM 2.1's postprocessing).
        input_size: (h, w) of the resized image inside the padded input (None with `padded_size`).
        original_size: (H, W) of the original image.
        block: output rows per block of the banded products.

    Returns:
        The official `postprocess_masks` result (to float rounding), dtype of `logits`.
    """
    s = logits.shape[-1]
    valid = (None, None) if input_size is None else input_size
    index_w, weights_w = _blocked_map(s, padded_size, valid[1], original_size[1], block)
    index_h, weights_h = _blocked_map(s, padded_size, valid[0], original_size[0], block)
    x = _resize_rows(logits.transpose(-1, -2), index_w, weights_w, original_size[1])  # [..., W, S]
    return _resize_rows(x.transpose(-1, -2), index_h, weights_h, original_size[0])  # [..., H, W]
