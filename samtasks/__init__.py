"""samtasks: zero-shot task transfer with the Segment Anything Model."""

from samtasks.build import MODEL_SPECS, SamSpec, build_sam
from samtasks.checkpoints import CheckpointError
from samtasks.predictor import SamPredictor
from samtasks.structures import MaskPrediction

__version__ = "0.1.0"

__all__ = ["MODEL_SPECS", "CheckpointError", "MaskPrediction", "SamPredictor", "SamSpec", "__version__", "build_sam"]
