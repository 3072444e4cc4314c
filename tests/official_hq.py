"""The official MobileSAM (`mobile_sam`, mobilesam-mirror) and SAM-HQ (`segment_anything_hq`) models
built from our specs, and a call of their predictors; for parity tests and speed benchmarks.

The official TinyViT caches its attention biases when it is put in eval mode: after changing its
weights in place, call `.eval()` again (`tests.conftest.randomize` does).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import torch

from samtasks.modeling.mobile_sam import MobileSamSpec
from samtasks.modeling.sam import SamSpec
from samtasks.modeling.sam_hq import HqSpec


def _tiny_vit(package, spec: MobileSamSpec):
    """The package's TinyViT for `spec` (its neck is 256 wide and its grid 64x64 whatever the spec)."""
    return package.TinyViT(
        img_size=spec.image_size,
        in_chans=3,
        num_classes=1000,
        embed_dims=list(spec.embed_dims),
        depths=list(spec.depths),
        num_heads=list(spec.num_heads),
        window_sizes=list(spec.window_sizes),
        mlp_ratio=spec.mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=spec.mbconv_expand_ratio,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def _vit(package, spec: SamSpec):
    return package.ImageEncoderViT(
        depth=spec.encoder_depth,
        embed_dim=spec.encoder_embed_dim,
        img_size=spec.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec.encoder_num_heads,
        patch_size=spec.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.encoder_global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.prompt_embed_dim,
    )


def _prompt_encoder_and_transformer(package, spec: SamSpec | MobileSamSpec):
    grid = spec.embedding_size
    size = spec.frame.prompt_size
    prompt_encoder = package.PromptEncoder(
        embed_dim=spec.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=spec.mask_in_chans,
    )
    transformer = package.TwoWayTransformer(
        depth=spec.decoder_depth,
        embedding_dim=spec.prompt_embed_dim,
        mlp_dim=spec.decoder_mlp_dim,
        num_heads=spec.decoder_num_heads,
    )
    return prompt_encoder, transformer


def official_sizes(spec: MobileSamSpec | HqSpec) -> MobileSamSpec | HqSpec:
    """`spec` with a TinyViT at the sizes the official TinyViT hard-codes (1024 px input for its 64x64
    grid, a 320-wide last stage for its stride-1 merge, a 256-wide neck and so decoder); other specs
    unchanged. The tiny test specs run small; their parity is checked at these sizes."""
    if isinstance(spec, HqSpec):
        return dataclasses.replace(spec, sam=official_sizes(spec.sam))
    if isinstance(spec, MobileSamSpec):
        return dataclasses.replace(spec, image_size=1024, embed_dims=(*spec.embed_dims[:3], 320), prompt_embed_dim=256)
    return spec


def build_official_mobile_sam(spec: MobileSamSpec) -> torch.nn.Module:
    """MobileSAM's `Sam` with `spec`'s architecture (random weights, eval mode). TinyViT cannot be
    built on the meta device (its constructor calls `.item()`)."""
    from mobile_sam import modeling

    prompt_encoder, transformer = _prompt_encoder_and_transformer(modeling, spec)
    return modeling.Sam(
        image_encoder=_tiny_vit(modeling, spec),
        prompt_encoder=prompt_encoder,
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def build_official_hq(spec: HqSpec) -> torch.nn.Module:
    """segment_anything_hq's `Sam` with `spec`'s architecture (random weights, eval mode), with the
    ViT encoder (`hq_vit_b/l/h`) or TinyViT (Light HQ-SAM) as in its `build_sam.py`."""
    from segment_anything_hq import modeling

    sam = spec.sam
    if isinstance(sam, MobileSamSpec):
        image_encoder, vit_dim = _tiny_vit(modeling, sam), sam.embed_dims[2]
    else:
        image_encoder, vit_dim = _vit(modeling, sam), sam.encoder_embed_dim
    prompt_encoder, transformer = _prompt_encoder_and_transformer(modeling, sam)
    return modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=modeling.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=sam.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=sam.iou_head_hidden_dim,
            vit_dim=vit_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def build_official_model(spec: MobileSamSpec | HqSpec) -> torch.nn.Module:
    """The official model of `spec`'s family (MobileSAM or SAM-HQ)."""
    return build_official_hq(spec) if isinstance(spec, HqSpec) else build_official_mobile_sam(spec)


def official_predictor(model: torch.nn.Module):
    """The official `SamPredictor` of `model`'s package."""
    if type(model).__module__.startswith("segment_anything_hq"):
        from segment_anything_hq import SamPredictor
    else:
        from mobile_sam import SamPredictor
    return SamPredictor(model)


def official_predict(predictor, points=None, labels=None, boxes=None, mask_input=None, multimask=True, **kwargs):
    """The official predictor on a batch of prompts in original-image pixels, through its documented
    `predict_torch` path (`kwargs`: e.g. SAM-HQ's `hq_token_only`).

    Returns:
        numpy logits at the original size `[P, C, H, W]`, predicted IoU `[P, C]`, low-res logits
        `[P, C, S, S]`.
    """
    h, w = predictor.original_size
    args = {"point_coords": None, "point_labels": None}
    if points is not None:
        coords = predictor.transform.apply_coords(np.asarray(points, np.float32), (h, w))
        args["point_coords"] = torch.as_tensor(coords, dtype=torch.float)
        args["point_labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.int)
    if boxes is not None:
        args["boxes"] = torch.as_tensor(predictor.transform.apply_boxes(np.asarray(boxes, np.float32), (h, w)))
    if mask_input is not None:
        args["mask_input"] = torch.as_tensor(mask_input, dtype=torch.float)
    masks, iou, low = predictor.predict_torch(multimask_output=multimask, return_logits=True, **args, **kwargs)
    return masks.numpy(), iou.numpy(), low.numpy()


# Prompts on a 90x150 (H x W) image, in original pixels, as `predict` keywords: a point, a box, both,
# and a batch of prompts with a background and a padding (-1) label.
PROMPT_CASES = {
    "one point": dict(points=[[[40.0, 30.0]]], labels=[[1]]),
    "box": dict(boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "box and points": dict(points=[[[60.0, 40.0], [30.0, 20.0]]], labels=[[1, 0]], boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "batch of points": dict(
        points=[[[5.0, 5.0], [50.0, 60.0]], [[140.0, 80.0], [70.0, 10.0]], [[75.0, 45.0], [0.0, 0.0]]],
        labels=[[1, 0], [1, 1], [1, -1]],
    ),
}
