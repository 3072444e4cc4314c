"""Object proposals: the automatic mask generator with the paper's LVIS settings, ranked and cut to
at most `max_proposals` masks per image (PAPER.md section 4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from samtasks.predictor import SamPredictor
from samtasks.structures import GeneratedMasks, Proposals
from samtasks.tasks.amg import PRESETS as AMG_PRESETS
from samtasks.tasks.amg import AmgSettings, AutomaticMaskGenerator
from samtasks.utils.settings import check_field_types, preset_with_overrides

RANKINGS = ("quality", "random")


@dataclass(frozen=True)
class ProposalSettings:
    """How proposals are made: an AMG preset with overrides, then a ranking and a cut."""

    amg_preset: str = "amg-lvis"  # a key of `samtasks.tasks.amg.PRESETS`
    amg: dict = dataclasses.field(default_factory=dict)  # AmgSettings fields overriding the preset
    max_proposals: int = 1000  # the best this many masks are kept per image
    ranking: str = "quality"  # "quality": mean(predicted IoU, stability); "random": seeded shuffle
    seed: int = 0  # the random ranking's seed (the same permutation stream for every image)

    def __post_init__(self) -> None:
        check_field_types(self)
        self.amg_settings()  # an unknown preset or AMG knob is an error here
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        if self.max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {self.max_proposals}")

    def amg_settings(self) -> AmgSettings:
        """The generator's settings: `amg_preset` with the `amg` overrides."""
        return preset_with_overrides(AMG_PRESETS, self.amg_preset, self.amg)


PRESETS: dict[str, ProposalSettings] = {
    # Table 4 "SAM": 64x64 grid, no crops, no filtering, NMS 0.9, ranked by mean(IoU, stability).
    "proposals-lvis": ProposalSettings(),
    # Table 4 "single out.": the single-mask token on a 128x128 grid, NMS 0.95, random ranking.
    "proposals-single-output": ProposalSettings(
        amg={"points_per_side": 128, "multimask_output": False, "box_nms_thresh": 0.95}, ranking="random"
    ),
}


def rank_masks(masks: GeneratedMasks, settings: ProposalSettings) -> Proposals:
    """Scores `masks` by the settings' ranking and keeps the best `max_proposals`."""
    if settings.ranking == "quality":
        scores = (masks.predicted_iou.astype(np.float64) + masks.stability_score) / 2
    else:
        scores = np.random.default_rng(settings.seed).random(len(masks))
    order = np.argsort(-scores, kind="stable")[: settings.max_proposals]
    return Proposals(masks=masks.select(order), scores=scores[order].astype(np.float32))


class ProposalGenerator:
    """Class-agnostic object proposals for one image at a time.

    Args:
        predictor: the `SamPredictor` to prompt.
        settings: how proposals are made (default: the `proposals-lvis` preset); see `from_preset`.
    """

    def __init__(self, predictor: SamPredictor, settings: ProposalSettings | None = None) -> None:
        self.settings = settings or PRESETS["proposals-lvis"]
        self.generator = AutomaticMaskGenerator(predictor, **dataclasses.asdict(self.settings.amg_settings()))

    @classmethod
    def from_preset(cls, predictor: SamPredictor, name: str, **overrides) -> ProposalGenerator:
        """A generator with `PRESETS[name]`, any `ProposalSettings` field overridden by keyword
        (`amg` entries are merged into the preset's)."""
        return cls(predictor, preset_with_overrides(PRESETS, name, overrides))

    def generate(self, image) -> Proposals:
        """Proposals for one image (array, PIL image or path)."""
        return rank_masks(self.generator.generate(image), self.settings)
