"""Shared fixtures: official reference models built from our specs, random weights saved as `.pth`."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

# The test models are tiny: intra-op threads gain little, and on a busy machine every OpenMP barrier
# waits for a scheduler slice (the suite ran 4-6x slower with 2 threads beside other jobs). Set before
# torch is imported, so the command-line subprocesses inherit it; OMP_NUM_THREADS overrides.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from samtasks.build import MODEL_SPECS, SamSpec


def build_official(spec: SamSpec):
    """The official package's model with `spec`'s architecture (random weights)."""
    sa = pytest.importorskip("segment_anything.modeling")
    grid = spec.embedding_size
    return sa.Sam(
        image_encoder=sa.ImageEncoderViT(
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
        ),
        prompt_encoder=sa.PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=sa.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sa.TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fills every parameter and buffer with seeded noise at a fan-in scale, so that no zero-initialized
    part (relative positions, position embedding) hides a difference and masks are neither all-on nor
    all-off. Re-applies the model's train/eval mode last, for modules that cache tensors derived from
    their weights on a mode switch (the official TinyViT's attention biases).

    SAM 2's projections of the stride-4 and stride-8 features into the decoder (`conv_s0`,
    `conv_s1`) get a tenth of that scale: at full scale the per-channel offsets of those features
    outweigh their spatial variation and turn every mask all-on or all-off."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=gen)
            if "gaussian_matrix" in name or "attention_biases" in name:
                tensor.copy_(noise)
            elif tensor.ndim >= 2:
                # ConvTranspose2d weights are [in, out, k, k]
                transposed = any(k in name for k in ("output_upscaling", "compress_vit_feat", "embedding_encoder"))
                fan_in = tensor.shape[0] * tensor[0, 0].numel() if transposed else tensor[0].numel()
                tensor.copy_(noise / fan_in**0.5)
            elif name.endswith("bias"):
                tensor.copy_(0.1 * noise)
            else:  # norm weights, batch-norm statistics
                tensor.copy_(1.0 + 0.1 * noise)
            if ".conv_s" in name:
                tensor.mul_(0.1)
    return model.train(model.training)


@pytest.fixture(scope="session")
def tiny_official():
    return randomize(build_official(MODEL_SPECS["tiny"]), seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_official) -> Path:
    """The official tiny model's random weights in the official `.pth` format."""
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(tiny_official.state_dict(), path)
    return path


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image `uint8 [h, w, 3]` (blobs, so masks are not pure noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.4) * max(h, w)
        image += rng.uniform(-1, 1, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))[..., None]
    image = (image - image.min()) / (np.ptp(image) + 1e-9)
    return (image * 255).astype(np.uint8)
