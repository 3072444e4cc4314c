"""The SAM network, with the official module and parameter names."""

from samtasks.modeling.image_encoder import ImageEncoderViT
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.sam import Sam
from samtasks.modeling.transformer import TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer"]
