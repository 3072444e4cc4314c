"""The SAM 2 / SAM 2.1 image model (Hiera encoder, SAM's prompt encoder, a decoder with
high-resolution features and an object score) and its spec.

Only the image path of the official `SAM2Base` is built; its video modules (memory attention and
encoder, object pointers) are in the official checkpoints and are skipped when loading
(`Sam2Spec.ignored_keys`). The computation is the official `SAM2ImagePredictor`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from samtasks.checkpoints import CheckpointInfo
from samtasks.modeling.common import MLP
from samtasks.modeling.frame import DecoderOutput, ImageFrame
from samtasks.modeling.hiera import FpnNeck, Hiera, ImageEncoder
from samtasks.modeling.low_rank import DenseFactors
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.transformer import TwoWayTransformer

# The official image predictor's low-res logits are clamped to this before they are returned.
LOGIT_LIMIT = 32.0
# The official builder's `dynamic_multimask_via_stability` settings.
STABILITY_DELTA = 0.05
STABILITY_THRESH = 0.98


class Sam2MaskDecoder(MaskDecoder):
    """SAM's mask decoder with SAM 2's additions: an object-score token and head, the encoder's
    stride-4 and stride-8 features added in the upscaling (`conv_s0`, `conv_s1` project them, at
    encoding time), a sigmoid on the IoU head, and the single-mask output replaced by the best
    multimask output when it is unstable (the official builder's dynamic multimask).
    """

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, iou_head_hidden_dim: int) -> None:
        super().__init__(
            transformer_dim=transformer_dim, transformer=transformer, iou_head_hidden_dim=iou_head_hidden_dim
        )
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | DenseFactors,
        multimask_output: bool,
        high_res: tuple[torch.Tensor, torch.Tensor],
        min_iou: float | None = None,
    ) -> DecoderOutput:
        """Decodes P prompts against one image.

        Args:
            image_embeddings: `[1, C, h, w]`.
            image_pe: `[1, C, h, w]`.
            sparse_prompt_embeddings: `[P, T, C]`.
            dense_prompt_embeddings: `[P, C, h, w]` (an expanded view when there is no mask input),
                or a mask input's `DenseFactors`.
            multimask_output: tokens 1..3 instead of token 0 (or the best of 1..3 where token 0's
                mask is unstable).
            high_res: projected encoder features in `upscale_and_project`'s layouts.
            min_iou: with multimask output, a prompt whose every predicted IoU is at most this gets
                no mask logits (-inf); without, every prompt's are computed (the IoU depends on them).

        Returns:
            Mask logits `[P, M, 4h, 4w]`, IoU `[P, M]` in [0, 1], object-score logits `[P]`.
        """
        p, t = sparse_prompt_embeddings.shape[:2]
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        grid = image_embeddings.shape[-2:]
        image, mask_inputs, dense = self.low_rank_start(image_embeddings, dense_prompt_embeddings, 6 + t)
        if image is not None:
            m = 3 if multimask_output else self.num_mask_tokens
            dtype = torch.promote_types(image.dtype, torch.float32)
            masks = torch.empty(p, m, 4 * grid[0], 4 * grid[1], dtype=dtype, device=image.device)
            parts = []
            passes = self.low_rank_passes(image, image_pe, sparse_prompt_embeddings, output_tokens, mask_inputs)
            for chunk, hs, keys in passes:
                iou, object_scores, hyper_in, keep = self._sam2_heads(hs, multimask_output, min_iou)
                self._upscale_low_rank(keys, hyper_in, grid, keep, out=masks[chunk], high_res=high_res)
                parts.append((iou, object_scores))
            iou, object_scores = (torch.cat(part) for part in zip(*parts, strict=True))
        else:
            src = image_embeddings + (dense[:1] if dense.stride(0) == 0 else dense)
            tokens = torch.cat([output_tokens.expand(p, -1, -1), sparse_prompt_embeddings], dim=1)  # [P, 6 + T, C]
            hs, src = self.transformer(src, image_pe, tokens)  # [P, 6 + T, C], [P, hw, C]
            iou, object_scores, hyper_in, keep = self._sam2_heads(hs, multimask_output, min_iou)
            masks = self.upscale_and_project(src.expand(p, -1, -1), hyper_in, grid, high_res, keep)
        if multimask_output:
            return DecoderOutput(masks, iou[:, 1:], object_scores)
        masks, iou = _stable_or_best(masks, iou)
        return DecoderOutput(masks, iou, object_scores)

    def _sam2_heads(
        self, hs: torch.Tensor, multimask_output: bool, min_iou: float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """IoU `[P, 4]` in [0, 1], object-score logits `[P]`, hypernetwork weights `[P, M, C/8]` (M = 3,
        or all 4 for the single-mask choice) and the prompts whose masks are needed (None: all)."""
        iou = torch.sigmoid(self.iou_prediction_head(hs[:, 1]))
        object_scores = self.pred_obj_score_head(hs[:, 0])[:, 0]
        chosen = range(1, self.num_mask_tokens) if multimask_output else range(self.num_mask_tokens)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 2 + i]) for i in chosen], dim=1)
        keep = (iou[:, 1:] > min_iou).any(1) if min_iou is not None and multimask_output else None
        return iou, object_scores, hyper_in, keep


def _stable_or_best(masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token 0's mask `[P, 1, S, S]` and IoU `[P, 1]`, or the multimask output with the highest IoU
    where token 0's stability (IoU of its masks thresholded at +-0.05) is below 0.98."""
    single = masks[:, 0].flatten(1)  # [P, S*S]
    inner = (single > STABILITY_DELTA).sum(1).float()
    outer = (single > -STABILITY_DELTA).sum(1).float()
    stable = torch.where(outer > 0, inner / outer, 1.0) >= STABILITY_THRESH  # [P]
    best = 1 + iou[:, 1:].argmax(1)  # [P]
    index = torch.where(stable, 0, best)
    rows = torch.arange(masks.shape[0], device=masks.device)
    return masks[rows, index][:, None], iou[rows, index][:, None]


def _compose_1x1(x: torch.Tensor, first: nn.Conv2d, second: nn.Conv2d) -> torch.Tensor:
    """`second(first(x))` for two 1x1 convolutions, as one: the neck's lateral convolution and the
    decoder's projection of the stride-4 (stride-8) map never lay out its `d_model` channels."""
    with torch.autocast(x.device.type, enabled=False):  # the composed weights in float32
        w1, w2 = first.weight.flatten(1).float(), second.weight.flatten(1).float()  # [C1, C0], [C2, C1]
        weight = (w2 @ w1)[:, :, None, None]
        bias = w2 @ first.bias.float() + second.bias.float()
    return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype))


class Sam2(nn.Module):
    """SAM 2's image path. Submodule and parameter names are the official checkpoint's keys."""

    mask_threshold = 0.0
    num_multimask_outputs = 3

    def __init__(
        self,
        image_encoder: ImageEncoder,
        sam_prompt_encoder: PromptEncoder,
        sam_mask_decoder: Sam2MaskDecoder,
        *,
        frame: ImageFrame,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.sam_prompt_encoder = sam_prompt_encoder
        self.sam_mask_decoder = sam_mask_decoder
        # Added to the stride-16 features of a still image (the video model's "no memory" state).
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, sam_prompt_encoder.embed_dim))
        self.frame = frame

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """(S, S) of `mask_input` and of the low-res logits (256 for the official models)."""
        return self.sam_prompt_encoder.mask_input_size

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` encoder input -> image features.

        Returns:
            `image_embeddings [B, C, h, w]` (stride 16, with `no_mem_embed`), and the decoder's
            projections of the stride-4 and stride-8 maps in its token layouts:
            `high_res_s0 [B, 4hw, 2, 2, C/8]`, `high_res_s1 [B, 4hw, C/4]`.
        """
        stages = self.image_encoder.trunk(images)
        neck, decoder = self.image_encoder.neck, self.sam_mask_decoder
        s0 = _compose_1x1(stages[0], neck.lateral(0), decoder.conv_s0)  # [B, C/8, 4h, 4w]
        s1 = _compose_1x1(stages[1], neck.lateral(1), decoder.conv_s1)  # [B, C/4, 2h, 2w]
        s2 = neck(stages)
        b, c8, h4, w4 = s0.shape
        h, w, c4 = h4 // 4, w4 // 4, s1.shape[1]
        s0 = s0.reshape(b, c8, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)  # [B, h, w, i, j, k, l, C/8]
        s1 = s1.reshape(b, c4, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)  # [B, h, w, i, j, C/4]
        return {
            "image_embeddings": s2 + self.no_mem_embed.reshape(1, -1, 1, 1),
            "high_res_s0": s0.reshape(b, -1, 2, 2, c8),
            "high_res_s1": s1.reshape(b, -1, c4),
        }

    def embed_prompts(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | DenseFactors]:
        """Sparse `[P, T, C]` and dense `[P, C, h, w]` embeddings; coordinates in the prompt frame.

        As the official predictor does, a box becomes two points labelled 2 and 3 placed before
        the click points, and the points always get the trailing padding point. A mask input's
        dense embedding stays `DenseFactors` (see `Sam.embed_prompts`).
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([2, 3], device=boxes.device).expand(corners.shape[0], 2)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
        return self.sam_prompt_encoder(points, None, masks, factored=True)

    def decode(
        self,
        features: dict[str, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor | DenseFactors,
        multimask: bool,
        min_iou: float | None = None,
    ) -> DecoderOutput:
        """Decodes P prompts against one image's features (batch 1)."""
        return self.sam_mask_decoder(
            features["image_embeddings"],
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask,
            (features["high_res_s0"], features["high_res_s1"]),
            min_iou,
        )


@dataclass(frozen=True)
class Sam2Spec:
    """Architecture of one SAM 2 / 2.1 image model (and where its official weights live)."""

    license: ClassVar[str] = "Apache-2.0"
    # The official checkpoints' video modules, unused on still images.
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "maskmem_tpos_enc",
        "no_mem_pos_enc",
        "no_obj_ptr",
        "no_obj_embed_spatial",
        "mask_downsample.",
        "memory_attention.",
        "memory_encoder.",
        "obj_ptr_proj.",
        "obj_ptr_tpos_proj.",
    )

    embed_dim: int  # Hiera stage-1 width
    num_heads: int  # Hiera stage-1 heads
    stages: tuple[int, int, int, int]  # blocks per stage
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    image_size: int = 1024
    prompt_embed_dim: int = 256  # the neck's d_model and the decoder width
    version: str = "2.1"
    checkpoint: CheckpointInfo | None = None

    @property
    def family(self) -> str:
        return f"SAM {self.version}"

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 image embedding grid (64 for the official models)."""
        return self.image_size // 16

    @property
    def frame(self) -> ImageFrame:
        return ImageFrame(
            encoder_size=self.image_size,
            prompt_size=self.image_size,
            resize="square",
            resample="antialias",
            logit_limit=LOGIT_LIMIT,
        )

    @property
    def description(self) -> str:
        """The encoder in a few words, for `samtasks models`."""
        return f"Hiera {self.embed_dim}/{'-'.join(map(str, self.stages))}"

    def build(self) -> Sam2:
        """An untrained model for this spec (on the current default device; `meta` works).

        The decoder sizes below are fixed in the official `SAM2Base` for every model.
        """
        trunk = Hiera(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            stages=self.stages,
            global_att_blocks=self.global_att_blocks,
            window_spec=self.window_spec,
            window_pos_embed_bkg_spatial_size=self.window_pos_embed_bkg_spatial_size,
        )
        neck = FpnNeck(d_model=self.prompt_embed_dim, backbone_channel_list=trunk.channel_list)
        grid = self.embedding_size
        prompt_encoder = PromptEncoder(
            embed_dim=self.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
        )
        transformer = TwoWayTransformer(
            depth=2, embedding_dim=self.prompt_embed_dim, num_heads=8, mlp_dim=2048, mlp_names="layers"
        )
        decoder = Sam2MaskDecoder(
            transformer_dim=self.prompt_embed_dim, transformer=transformer, iou_head_hidden_dim=256
        )
        return Sam2(ImageEncoder(trunk, neck), prompt_encoder, decoder, frame=self.frame)
