"""Model specs, checkpoint registry and `build_sam`.

A spec is a plain frozen dataclass; `MODEL_SPECS` maps names to specs. The official checkpoints
load with strict key checking because every module keeps the official parameter names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from samtasks.checkpoints import CheckpointError, CheckpointInfo, load_state_dict, resolve_checkpoint
from samtasks.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

logger = logging.getLogger(__name__)

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class SamSpec:
    """Architecture of one SAM variant (and where its official weights live, if any)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
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
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits and of `mask_input` (256 for the official models)."""
        return 4 * self.embedding_size


MODEL_SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec(
        768,
        12,
        12,
        (2, 5, 8, 11),
        checkpoint=CheckpointInfo(_URL + "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8"),
    ),
    "vit_l": SamSpec(
        1024,
        24,
        16,
        (5, 11, 17, 23),
        checkpoint=CheckpointInfo(_URL + "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
    ),
    "vit_h": SamSpec(
        1280,
        32,
        16,
        (7, 15, 23, 31),
        checkpoint=CheckpointInfo(_URL + "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
    ),
    # Tests only: random weights, 128 px input, an 8x8 grid whose 3x3 windows need padding.
    "tiny": SamSpec(
        32,
        2,
        2,
        (1,),
        image_size=128,
        window_size=3,
        prompt_embed_dim=32,
        decoder_num_heads=2,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
        mask_in_chans=8,
    ),
}


def get_spec(name: str) -> SamSpec:
    """The spec called `name`, or a ValueError listing the known names."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown SAM model {name!r}; choose one of {', '.join(MODEL_SPECS)}")
    return MODEL_SPECS[name]


def build_model(spec: SamSpec) -> Sam:
    """An untrained `Sam` for `spec` (on the current default device; `meta` works)."""
    grid = spec.embedding_size
    image_encoder = ImageEncoderViT(
        img_size=spec.image_size,
        patch_size=spec.patch_size,
        embed_dim=spec.encoder_embed_dim,
        depth=spec.encoder_depth,
        num_heads=spec.encoder_num_heads,
        global_attn_indexes=spec.encoder_global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(spec.image_size, spec.image_size),
        mask_in_chans=spec.mask_in_chans,
    )
    transformer = TwoWayTransformer(
        depth=spec.decoder_depth,
        embedding_dim=spec.prompt_embed_dim,
        num_heads=spec.decoder_num_heads,
        mlp_dim=spec.decoder_mlp_dim,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=spec.prompt_embed_dim, transformer=transformer, iou_head_hidden_dim=spec.iou_head_hidden_dim
    )
    return Sam(image_encoder, prompt_encoder, mask_decoder)


def _guess_spec(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Name of the spec whose encoder width and depth match a state dict, if any."""
    pos = state_dict.get("image_encoder.pos_embed")
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    for name, spec in MODEL_SPECS.items():
        if pos is not None and pos.shape[-1] == spec.encoder_embed_dim and depth == spec.encoder_depth:
            return name
    return None


def load_weights(model: Sam, state_dict: dict[str, torch.Tensor], *, spec_name: str, source: str) -> None:
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
        parts = [f"{source} does not match SAM spec {spec_name!r}"]
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
    model.load_state_dict(state_dict, strict=True)


def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    progress: bool = True,
) -> Sam:
    """Builds SAM `name` in eval mode on the CPU.

    Args:
        name: a key of `MODEL_SPECS` (`vit_b`, `vit_l`, `vit_h`, `tiny`).
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
    model = build_model(spec)
    path = resolve_checkpoint(checkpoint, spec.checkpoint if pretrained else None, progress=progress)
    if path is not None:
        load_weights(model, load_state_dict(path), spec_name=name, source=str(path))
        logger.info("loaded %s weights from %s", name, path)
    return model.eval()
