"""The official `sam2` package's model for one of our `Sam2Spec`s (tests and the speed benchmark).

The official YAML config of the spec's version (2.0 or 2.1) is loaded, its Hiera and neck sizes are
replaced by the spec's, and the model is instantiated as `sam2.build_sam.build_sam2` does (with the
dynamic multimask settings it adds), video modules included, so its state dict has the official
file's keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from samtasks.modeling.sam2 import Sam2Spec


def build_official_sam2(spec: Sam2Spec) -> torch.nn.Module:
    """The official `SAM2Base` with `spec`'s architecture (random weights, eval mode, CPU)."""
    import sam2
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    folder, name = ("sam2.1", "sam2.1_hiera_t.yaml") if spec.version == "2.1" else ("sam2", "sam2_hiera_t.yaml")
    cfg = OmegaConf.load(Path(sam2.__file__).parent / "configs" / folder / name)
    model = cfg.model
    model.image_size = spec.image_size
    model.image_encoder.trunk = {
        "_target_": "sam2.modeling.backbones.hieradet.Hiera",
        "embed_dim": spec.embed_dim,
        "num_heads": spec.num_heads,
        "stages": list(spec.stages),
        "global_att_blocks": list(spec.global_att_blocks),
        "window_spec": list(spec.window_spec),
        "window_pos_embed_bkg_spatial_size": list(spec.window_pos_embed_bkg_spatial_size),
    }
    model.image_encoder.neck.d_model = spec.prompt_embed_dim
    model.image_encoder.neck.backbone_channel_list = [spec.embed_dim * 2**i for i in (3, 2, 1, 0)]
    model.sam_mask_decoder_extra_args = {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }
    return instantiate(model, _recursive_=True).eval()


def official_predictor(model: torch.nn.Module):
    """`SAM2ImagePredictor` on `model`, with feature sizes for its image size (the official
    predictor assumes 1024)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    side = model.image_size // 4
    predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    return predictor
