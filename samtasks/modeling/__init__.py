"""SAM-family networks, with the official module and parameter names."""

from samtasks.modeling.efficientvit import EfficientViTSamSpec
from samtasks.modeling.frame import DecoderOutput, ImageFrame
from samtasks.modeling.image_encoder import ImageEncoderViT
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.mask_decoder_hq import MaskDecoderHQ
from samtasks.modeling.mobile_sam import MobileSamSpec
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.sam import Sam, SamSpec
from samtasks.modeling.sam2 import Sam2, Sam2Spec
from samtasks.modeling.sam_hq import HqSpec, SamHQ
from samtasks.modeling.tiny_vit import TinyViT
from samtasks.modeling.transformer import TwoWayTransformer

__all__ = [
    "DecoderOutput",
    "EfficientViTSamSpec",
    "HqSpec",
    "ImageEncoderViT",
    "ImageFrame",
    "MaskDecoder",
    "MaskDecoderHQ",
    "MobileSamSpec",
    "PromptEncoder",
    "Sam",
    "Sam2",
    "Sam2Spec",
    "SamHQ",
    "SamSpec",
    "TinyViT",
    "TwoWayTransformer",
]
