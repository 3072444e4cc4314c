"""The SAM prompt encoder: points, boxes and mask logits -> sparse and dense embeddings.

Coordinates reaching this module are in the model's input frame (the resized, padded image,
`input_image_size` pixels), x before y.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from samtasks.modeling.common import LayerNorm2d
from samtasks.modeling.low_rank import DenseFactors


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of normalized coordinates through a fixed random Gaussian matrix."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """`[..., 2]` coordinates in [0, 1] -> `[..., 2 * num_pos_feats]`."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell center of an `h x w` grid, `[C, h, w]`."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=matrix.device, dtype=matrix.dtype) + 0.5) / h
        xs = (torch.arange(w, device=matrix.device, dtype=matrix.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, 2] as (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """`[..., 2]` (x, y) pixel coordinates in an `image_size` (h, w) frame -> `[..., C]`."""
        scale = torch.tensor([image_size[1], image_size[0]], device=coords.device, dtype=torch.float32)
        return self._encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Point labels: 1 foreground, 0 background, -1 padding (no point); 2 and 3 are box corners given
    as points (SAM 2 passes boxes that way), embedded like the corners of `boxes`.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, `[1, C, h, w]`."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """`[P, N, 2]` points, `[P, N]` labels -> `[P, N (+1 if pad), C]`."""
        points = points + 0.5  # pixel centers
        if pad:
            # Without a box the decoder was trained with one extra "not a point" token.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        for label, embedding in enumerate(self.point_embeddings):
            emb = emb + torch.where(labels == label, embedding.weight, 0.0)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """`[P, 4]` XYXY boxes -> `[P, 2, C]` corner embeddings."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])  # [2, C]
        return emb + corner_types

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        *,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | DenseFactors]:
        """Embeds a batch of P prompts.

        Args:
            points: `([P, N, 2] xy, [P, N] labels)` in the input frame, or None.
            boxes: `[P, 4]` XYXY in the input frame, or None.
            masks: `[P, 1, 4h, 4w]` mask logits, or None.

        Returns:
            Sparse embeddings `[P, T, C]` and dense embeddings `[P, C, h, w]`; without mask input the
            dense embedding is an expanded view of one learned vector; with mask input and
            `factored`, the mask embedding is returned as `DenseFactors` (its last convolution left
            to the decoder, which can then carry the image tokens in low-rank form).
        """
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty(batch, 0, self.embed_dim)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None and factored:
            last = self.mask_downscaling[-1]
            dense = DenseFactors(self.mask_downscaling[:-1](masks), last.weight.flatten(1), last.bias)
        elif masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return torch.cat(sparse, dim=1), dense
