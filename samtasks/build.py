"""Model specs, checkpoint registry and `build_sam`.

A spec is a plain frozen dataclass of its family's module (`SamSpec`, ...) with a `build()` method
and a `frame`; `MODEL_SPECS` maps names to specs. The official checkpoints load with strict key
checking because every module keeps the official parameter names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from samtasks.checkpoints import CheckpointError, CheckpointInfo, load_state_dict, resolve_checkpoint
from samtasks.modeling.efficientvit import EfficientViTSamSpec
from samtasks.modeling.mobile_sam import MobileSamSpec
from samtasks.modeling.sam import SamSpec
from samtasks.modeling.sam2 import Sam2Spec
from samtasks.modeling.sam_hq import HqSpec

logger = logging.getLogger(__name__)

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# SAM 2.1 (September 2024) and SAM 2.0 (July 2024) checkpoints, as the official
# checkpoints/download_ckpts.sh fetches them; no checksum is published for them.
_SAM2_1_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM2_0_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"

# Hiera sizes of the official configs (configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml; SAM 2.0's are the same).
_HIERA = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20)),
    "large": dict(
        embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43), window_spec=(8, 4, 16, 8)
    ),
}
_BKG_7 = {"tiny", "small", "large"}  # window_pos_embed_bkg_spatial_size (7, 7); base_plus keeps (14, 14)


def _sam2_spec(size: str, version: str) -> Sam2Spec:
    prefix, url = ("sam2.1_hiera_", _SAM2_1_URL) if version == "2.1" else ("sam2_hiera_", _SAM2_0_URL)
    return Sam2Spec(
        **_HIERA[size],
        **({"window_pos_embed_bkg_spatial_size": (7, 7)} if size in _BKG_7 else {}),
        version=version,
        checkpoint=CheckpointInfo(f"{url}{prefix}{size}.pt"),
    )


# EfficientViT-SAM's published weights (linked from mit-han-lab/efficientvit's EfficientViT-SAM README).
# The project publishes no checksums; the SHA-256 digests below are those that
# InterDigitalInc/CompressAI-Vision's scripts/install.sh verifies these downloads against.
_EVIT_URL = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"

# What the official `efficientvit_sam_l*` and `efficientvit_sam_xl*` builders share.
_EVIT_L = dict(
    width_list=(32, 64, 128, 256, 512),
    block_list=("res", "fmb", "fmb", "mb", "att"),
    expand_list=(1, 4, 4, 4, 6),
    fewer_norm_list=(False, False, False, True, True),
    neck_stages=(4, 3, 2),
    neck_expand_ratio=1,
    encoder_size=512,
)
_EVIT_XL = dict(
    width_list=(32, 64, 128, 256, 512, 1024),
    block_list=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
    expand_list=(1, 4, 4, 4, 4, 6),
    fewer_norm_list=(False, False, False, False, True, True),
    neck_stages=(5, 4, 3),
    neck_expand_ratio=4,
    encoder_size=1024,
)

_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"  # the sam-hq README's checkpoint host

_MOBILE_SAM = MobileSamSpec(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
    # MD5 as registered for copies of this file by IOPaint and Tracking-Anything-with-DEVA.
    checkpoint=CheckpointInfo(
        "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
        "f3c0d8cda613564d499310dab6c812cd",
    ),
)
# Tests only: random weights, 128 px input, an 8x8 grid whose windows need padding. (The parity tests
# run it at the sizes the official TinyViT hard-codes: 1024 px, a 320-wide last stage, a 256-wide neck.)
_TEST_MOBILE_SAM = MobileSamSpec(
    embed_dims=(8, 16, 24, 40),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 3, 5),
    window_sizes=(7, 3, 5, 3),
    mlp_ratio=1.0,
    mbconv_expand_ratio=2.0,
    image_size=128,
    prompt_embed_dim=32,
    decoder_num_heads=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
    mask_in_chans=8,
)


# Every family's spec: a frozen dataclass with `family`, `license`, `description`, `frame`,
# `checkpoint`, `ignored_keys` (prefixes of official keys the image path does not use, dropped before
# the strict load) and `build()`.
Spec = SamSpec | MobileSamSpec | HqSpec | EfficientViTSamSpec | Sam2Spec

MODEL_SPECS: dict[str, Spec] = {
    "vit_b": SamSpec(
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
        checkpoint=CheckpointInfo(_URL + "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8"),
    ),
    "vit_l": SamSpec(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
        checkpoint=CheckpointInfo(_URL + "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
    ),
    "vit_h": SamSpec(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
        checkpoint=CheckpointInfo(_URL + "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
    ),
    # Tests only: random weights, 128 px input, an 8x8 grid whose 3x3 windows need padding.
    "tiny": SamSpec(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        image_size=128,
        window_size=3,
        prompt_embed_dim=32,
        decoder_num_heads=2,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
        mask_in_chans=8,
    ),
    "mobile_sam": _MOBILE_SAM,
    "hq_vit_b": HqSpec(
        sam=SamSpec(
            encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11)
        ),
        checkpoint=CheckpointInfo(_HQ_URL + "sam_hq_vit_b.pth", "c6b8953247bcfdc8bb8ef91e36a6cacc"),
    ),
    "hq_vit_l": HqSpec(
        sam=SamSpec(
            encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23)
        ),
        checkpoint=CheckpointInfo(_HQ_URL + "sam_hq_vit_l.pth", "08947267966e4264fb39523eccc33f86"),
    ),
    "hq_vit_h": HqSpec(
        sam=SamSpec(
            encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31)
        ),
        checkpoint=CheckpointInfo(_HQ_URL + "sam_hq_vit_h.pth", "3560f6b6a5a6edacd814a1325c39640a"),
    ),
    # Light HQ-SAM: MobileSAM's network with the HQ decoder (no digest of this file is published).
    "hq_vit_tiny": HqSpec(sam=_MOBILE_SAM, checkpoint=CheckpointInfo(_HQ_URL + "sam_hq_vit_tiny.pth", None)),
    # Tests only: random weights, 128 px input.
    "test_mobile_sam": _TEST_MOBILE_SAM,
    "test_hq": HqSpec(
        sam=SamSpec(
            encoder_embed_dim=32,
            encoder_depth=3,
            encoder_num_heads=2,
            encoder_global_attn_indexes=(1,),
            image_size=128,
            window_size=3,
            prompt_embed_dim=32,
            decoder_num_heads=2,
            decoder_mlp_dim=64,
            iou_head_hidden_dim=32,
            mask_in_chans=8,
        )
    ),
    "test_hq_tiny": HqSpec(sam=_TEST_MOBILE_SAM),
    **{f"sam2.1_hiera_{size}": _sam2_spec(size, "2.1") for size in _HIERA},
    **{f"sam2_hiera_{size}": _sam2_spec(size, "2.0") for size in _HIERA},
    # Tests only: random weights, 128 px input; windows that need padding, with and without query
    # pooling (blocks 4, 6 and 7).
    "test_sam2": Sam2Spec(
        embed_dim=8,
        num_heads=1,
        stages=(1, 2, 3, 2),
        global_att_blocks=(2, 5),
        window_spec=(8, 4, 6, 3),
        window_pos_embed_bkg_spatial_size=(4, 4),
        image_size=128,
        prompt_embed_dim=32,
    ),
    "efficientvit_sam_l0": EfficientViTSamSpec(
        **_EVIT_L,
        depth_list=(1, 1, 1, 4, 4),
        neck_depth=4,
        checkpoint=CheckpointInfo(
            _EVIT_URL + "efficientvit_sam_l0.pt",
            sha256="c4f994b01a16d48bcf2fbbb089448cfbf58fae5811edfa8113c953b8b8cc64b8",
        ),
    ),
    "efficientvit_sam_l1": EfficientViTSamSpec(
        **_EVIT_L,
        depth_list=(1, 1, 1, 6, 6),
        neck_depth=8,
        checkpoint=CheckpointInfo(
            _EVIT_URL + "efficientvit_sam_l1.pt",
            sha256="fa151df2b9b96896accd505470755cdd293a4c50cdabac95478f3fbd86d9152b",
        ),
    ),
    "efficientvit_sam_l2": EfficientViTSamSpec(
        **_EVIT_L,
        depth_list=(1, 2, 2, 8, 8),
        neck_depth=12,
        checkpoint=CheckpointInfo(
            _EVIT_URL + "efficientvit_sam_l2.pt",
            sha256="d4bfd842224cbb99de09acc3325e81ac5b7e8725c8fbdab152305e5d934bfe4a",
        ),
    ),
    "efficientvit_sam_xl0": EfficientViTSamSpec(
        **_EVIT_XL,
        depth_list=(0, 1, 1, 2, 3, 3),
        neck_depth=6,
        checkpoint=CheckpointInfo(
            _EVIT_URL + "efficientvit_sam_xl0.pt",
            sha256="9bc2f87bd23d6e6d1f7b5beff910f98835c7c333fac73e695bac0bec685968f8",
        ),
    ),
    "efficientvit_sam_xl1": EfficientViTSamSpec(
        **_EVIT_XL,
        depth_list=(1, 2, 2, 4, 6, 6),
        neck_depth=12,
        checkpoint=CheckpointInfo(
            _EVIT_URL + "efficientvit_sam_xl1.pt",
            sha256="10f42277679427c1183dcff19758e536aa86bcc4304e4b387ff48865784be05c",
        ),
    ),
    # Tests only: an L-style EfficientViT-SAM with random weights. It encodes 128 px while prompts
    # and masks live in a 256 frame (a 16 x 16 embedding), as the L models encode 512 px for the
    # 1024 frame; its 4 x 4 attention grid is no larger than qkv_dim, where the official code takes
    # its quadratic attention form.
    "test_efficientvit_sam": EfficientViTSamSpec(
        width_list=(8, 8, 16, 16, 32),
        depth_list=(1, 1, 1, 1, 1),
        block_list=("res", "fmb", "fmb", "mb", "att"),
        expand_list=(1, 4, 4, 4, 6),
        fewer_norm_list=(False, False, False, True, True),
        neck_stages=(4, 3, 2),
        neck_depth=1,
        neck_expand_ratio=1,
        encoder_size=128,
        prompt_size=256,
        qkv_dim=16,
        neck_width=16,
        prompt_embed_dim=32,
        decoder_num_heads=2,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
        mask_in_chans=8,
    ),
}


def get_spec(name: str) -> Spec:
    """The spec called `name`, or a ValueError listing the known names."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown SAM model {name!r}; choose one of {', '.join(MODEL_SPECS)}")
    return MODEL_SPECS[name]


def _guess_spec(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Name of the spec whose key -> shape manifest equals the state dict's, if any."""
    manifest = {k: tuple(v.shape) for k, v in state_dict.items()}
    for name, spec in MODEL_SPECS.items():
        with torch.device("meta"):
            expected = spec.build().state_dict()
        if {k: tuple(v.shape) for k, v in expected.items()} == manifest:
            return name
    return None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, spec_name: str, source: str) -> None:
    """Loads `state_dict` strictly, or raises CheckpointError naming the spec and the first bad keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: {tuple(state_dict[k].shape)} in file, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = [f"{source} does not match model spec {spec_name!r}"]
        guess = _guess_spec(state_dict)
        if guess and guess != spec_name:
            parts.append(f"it looks like a {guess!r} checkpoint")
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", wrong_shape),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError("; ".join(parts))
    # The model takes the file's tensors (mapped by `load_state_dict`) instead of copying them, so its
    # random initial weights are freed and the weights are never held twice; a file stored in another
    # dtype is converted.
    state_dict = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)


def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Builds SAM-family model `name` in eval mode on the CPU.

    Args:
        name: a key of `MODEL_SPECS` (`vit_b`, `mobile_sam`, `hq_vit_b`, `efficientvit_sam_l0`,
            `sam2.1_hiera_large`, ...; `samtasks models` lists them, `tiny`/`test_*` are for tests).
        checkpoint: a local `.pth` path or an http(s) URL. None: the spec's official checkpoint,
            downloaded into `$SAMTASKS_HOME` on first use.
        pretrained: with `checkpoint=None`, False gives random weights (specs without an official
            checkpoint, such as `tiny`, always do).
        progress: show a progress bar while downloading.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, fails its digest, cannot be
            downloaded, or does not match the spec.
    """
    spec = get_spec(name)
    model = spec.build()
    path = resolve_checkpoint(checkpoint, spec.checkpoint if pretrained else None, progress=progress)
    if path is not None:
        state_dict = load_state_dict(path)
        if spec.ignored_keys:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(spec.ignored_keys)}
        load_weights(model, state_dict, spec_name=name, source=str(path))
        logger.info("loaded %s weights from %s", name, path)
    return model.eval()
