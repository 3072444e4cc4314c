"""The official EfficientViT-SAM (PyPI `efficientsam`, a repackaging of mit-han-lab/efficientvit) built
from our specs; shared by the parity tests and the speed benchmark.

Importing this module needs `efficientsam` (the `dev` extra); tests import it after
`pytest.importorskip("efficientsam")`.
"""

from __future__ import annotations

from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone
from efficientsam.models.efficientvit.sam import EfficientViTSam, EfficientViTSamImageEncoder, SamNeck
from efficientsam.models.nn.norm import build_norm, set_norm_eps
from efficientsam.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from samtasks.modeling.efficientvit import NORM_EPS, EfficientViTSamSpec


def build_official(spec: EfficientViTSamSpec) -> EfficientViTSam:
    """The official model with `spec`'s architecture (random weights, eval mode), as the official
    model zoo's `create_efficientvit_sam_model` builds it: every norm's eps set to 1e-6.

    The official neck resizes to a 64 x 64 grid and normalizes 256 channels whatever the widths; for
    the tiny test specs those two constants are set to the spec's (no-ops for the official sizes).
    """
    backbone = EfficientViTLargeBackbone(
        width_list=list(spec.width_list),
        depth_list=list(spec.depth_list),
        block_list=list(spec.block_list),
        expand_list=list(spec.expand_list),
        fewer_norm_list=list(spec.fewer_norm_list),
        qkv_dim=spec.qkv_dim,
    )
    neck = SamNeck(
        fid_list=[f"stage{i}" for i in spec.neck_stages],
        in_channel_list=[spec.width_list[i] for i in spec.neck_stages],
        head_width=spec.neck_width,
        head_depth=spec.neck_depth,
        expand_ratio=spec.neck_expand_ratio,
        middle_op="fmb",
        out_dim=spec.prompt_embed_dim,
    )
    grid = spec.embedding_size
    for op in neck.input_ops:
        op.op_list[1].size = [grid, grid]
    image_encoder = EfficientViTSamImageEncoder(backbone, neck)
    image_encoder.norm = build_norm("ln2d", spec.prompt_embed_dim)
    model = EfficientViTSam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.prompt_size, spec.prompt_size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        image_size=(spec.prompt_size, spec.encoder_size),
    )
    set_norm_eps(model, NORM_EPS)
    return model.eval()
