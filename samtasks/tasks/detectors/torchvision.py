"""torchvision detection models as box detectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from samtasks.structures import Detections
from samtasks.utils.device import resolve_device


class TorchvisionDetector:
    """Boxes from a torchvision detection model (`fasterrcnn_resnet50_fpn_v2`, `retinanet_resnet50_fpn`, ...).

    Args:
        model: a name from `torchvision.models.list_models(module=torchvision.models.detection)`.
        weights: a weights enum name ("DEFAULT", "COCO_V1"; downloaded by torchvision), a local
            state-dict file, or "none" (random weights, for tests). Class names come from the
            default weights' metadata.
        conf, classes, max_det: minimum score, class ids to keep, most boxes kept.
        device: "cpu", "cuda:0", "mps", ... or None for the best available (`resolve_device`).
    """

    def __init__(
        self,
        model: str,
        *,
        weights: str = "DEFAULT",
        conf: float = 0.25,
        classes: Sequence[int] | None = None,
        max_det: int = 300,
        device: str | torch.device | None = None,
    ) -> None:
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models.detection)
        if model not in available:
            raise ValueError(f"unknown torchvision detector {model!r}; choose one of {', '.join(available)}")
        enum = torchvision.models.get_model_weights(model)
        self.names = dict(enumerate(enum.DEFAULT.meta["categories"]))
        local = Path(weights)
        if weights.lower() == "none" or local.is_file():
            net = torchvision.models.get_model(model, weights=None, weights_backbone=None)
            if local.is_file():
                net.load_state_dict(torch.load(local, map_location="cpu", weights_only=True))
        else:
            try:
                chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
            except KeyError as err:
                raise ValueError(f"{model} has no weights {weights!r}; choose one of {[w.name for w in enum]}") from err
            try:
                net = torchvision.models.get_model(model, weights=chosen)
            except (OSError, RuntimeError) as err:
                raise ValueError(f"cannot fetch {model} weights {chosen.url}: {err}") from err
        self.device = resolve_device(device)
        self.model = net.eval().to(self.device)
        self.conf, self.classes, self.max_det = conf, set(classes) if classes else None, max_det

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, image_id=None) -> Detections:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(self.device)  # [3, H, W] in [0, 1]
        out = self.model([tensor])[0]
        keep = out["scores"] >= self.conf
        if self.classes is not None:
            keep &= torch.isin(out["labels"], torch.tensor(sorted(self.classes), device=self.device))
        index = torch.nonzero(keep).flatten()[: self.max_det]  # torchvision returns boxes by score
        return Detections(
            boxes=out["boxes"][index].cpu().numpy().astype(np.float32),
            scores=out["scores"][index].cpu().numpy().astype(np.float32),
            labels=out["labels"][index].cpu().numpy().astype(np.int64),
            names=self.names,
        )
