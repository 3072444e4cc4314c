"""Text to mask: SAM's automatic masks ranked by CLIP (PAPER.md section 6).

The paper's text-prompted SAM was never released; with public weights the practical method is to
embed each candidate mask's crop with CLIP and compare it with the text. Crops follow the paper's D.5
recipe (the mask's box enlarged, made square, outside-mask pixels filled), so that a crop shows the
object and not its neighbours. Candidates and their CLIP features are computed once per image and
reused by every query on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import logging
import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from samtasks.predictor import SamPredictor
from samtasks.structures import TextCandidates, TextResult
from samtasks.tasks.amg import PRESETS as AMG_PRESETS
from samtasks.tasks.amg import AmgSettings, AutomaticMaskGenerator
from samtasks.utils.device import resolve_device
from samtasks.utils.image import load_image
from samtasks.utils.masks import decode_rle, xyxy_to_xywh
from samtasks.utils.optional import import_optional
from samtasks.utils.settings import check_field_types, check_range, preset_with_overrides

logger = logging.getLogger(__name__)

TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
)

CLIP_MODELS = {
    "fast": ("ViT-B-32", "laion2b_s34b_b79k"),  # the default: quick on a CPU
    "paper": ("ViT-L-14-336", "openai"),  # the CLIP of the paper's text-prompted SAM
}


@dataclass(frozen=True)
class TextSettings:
    """How candidates are made, cropped and ranked."""

    amg_preset: str = "text-candidates"  # a key of `samtasks.tasks.amg.PRESETS`: the candidate masks
    amg: dict = field(default_factory=dict)  # AmgSettings fields overriding the preset
    templates: tuple[str, ...] = TEMPLATES  # the prompt ensemble: the text embedding is their normalized mean
    enlarge: float = 1.5  # the crop's box enlargement (the paper trained with 1x to 2x)
    # With `all=True`, every candidate whose probability is at least `margin` times the best's is returned
    # (plural queries).
    margin: float = 0.5

    def __post_init__(self) -> None:
        check_field_types(self)
        self.amg_settings()  # an unknown preset or AMG knob is an error here
        if not self.templates or not all(isinstance(t, str) and "{}" in t for t in self.templates):
            raise ValueError(f"templates must be strings holding '{{}}' for the prompt, got {self.templates!r}")
        check_range("enlarge", self.enlarge, 0.0, math.inf, open_low=True)
        check_range("margin", self.margin, 0.0, 1.0)

    def amg_settings(self) -> AmgSettings:
        """The candidates' generator settings: `amg_preset` with the `amg` overrides."""
        return preset_with_overrides(AMG_PRESETS, self.amg_preset, self.amg)


PRESETS: dict[str, TextSettings] = {
    # CLIP ranks the crops of the `text-candidates` masks (PAPER.md section 6, with public CLIP weights).
    "text-clip": TextSettings(),
}


class TextImageEncoder(Protocol):
    """What the adapter needs from CLIP."""

    input_size: int  # square crop side the image tower takes
    mean: tuple[float, float, float]  # RGB in [0, 1], used to fill outside-mask pixels
    logit_scale: float

    def encode_images(self, crops: np.ndarray) -> torch.Tensor:
        """`uint8 [B, S, S, 3]` -> L2-normalized `float32 [B, D]`."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> L2-normalized `float32 [T, D]`."""


class OpenClipEncoder:
    """An open_clip model as `TextImageEncoder`.

    Args:
        model: open_clip architecture name (default "ViT-B-32"; the paper's is "ViT-L-14-336").
        pretrained: open_clip pretrained tag, downloaded by open_clip on first use; None gives random
            weights (tests).
        device: "cpu", "cuda:0", "mps", ... or None for the best available (`resolve_device`).
        batch_size: crops per image-tower call.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        open_clip = import_optional("open_clip", "clip", "text prompts")
        self.device = resolve_device(device)
        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r} (see open_clip.list_models())")
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained is not None and pretrained not in tags and not Path(pretrained).is_file():
            raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {model}; known: {', '.join(tags)}")
        source = _weights_source(open_clip, model, pretrained)
        offline = source is not None and not _reachable(source)
        try:
            # Offline, a cached copy loads without a request and a missing one fails at once, not after
            # the hub client's retries (about a minute).
            with _hub_offline() if offline else contextlib.nullcontext():
                net, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=self.device)
        except (RuntimeError, OSError) as err:  # open_clip wraps hub / network failures in RuntimeError
            reason = f"{source} cannot be reached and open_clip's cache has no copy" if offline else str(err)
            raise ValueError(
                f"cannot load CLIP weights {model}/{pretrained}: {reason}. open_clip downloads them into its cache on "
                "first use, which needs network; offline, download the weights file by hand and pass its path with "
                "--clip-pretrained PATH (`pretrained=` in the API)"
            ) from err
        self.model = net.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        size = net.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.mean = tuple(float(v) for v in getattr(net.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(float(v) for v in getattr(net.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.logit_scale = float(net.logit_scale.detach().exp())
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode_images(self, crops: np.ndarray) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(crops[i : i + self.batch_size]).to(self.device)
            batch = (batch.permute(0, 3, 1, 2).float() / 255 - mean) / std  # [B, 3, S, S]
            out.append(torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1))
        return torch.cat(out)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _weights_source(open_clip, model: str, pretrained: str | None) -> str | None:
    """Where open_clip downloads `pretrained`'s weights from (its hub repository, else its URL); None
    for no weights or a local file."""
    cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{os.path.dirname(cfg['hf_hub'])}"
    return cfg.get("url") or None


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether `url`'s server gives any HTTP answer within `timeout` seconds (through the environment's
    proxies)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False
    return True


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode (its `HF_HUB_OFFLINE`) while the block runs."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def mask_crop(
    image: np.ndarray, mask: np.ndarray, box: np.ndarray, size: int, fill, enlarge: float = 1.5
) -> np.ndarray:
    """The D.5 crop of one mask: its box enlarged `enlarge` times about its centre, made square, pixels
    outside the mask set to `fill`, resized to `size` x `size`.

    Args:
        image: `uint8 [H, W, 3]`; mask: `bool [H, W]`; box: XYXY (inclusive max, as the generator gives).
        fill: RGB in [0, 1] (CLIP's mean colour: zero after normalization).

    Returns:
        `uint8 [size, size, 3]`.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    side = max(x1 - x0 + 1, y1 - y0 + 1) * enlarge
    left, top = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    side_px = max(1, int(np.ceil(side)))
    fill_rgb = np.round(np.asarray(fill) * 255).astype(np.uint8)
    canvas = np.empty((side_px, side_px, 3), np.uint8)
    canvas[:] = fill_rgb
    h, w = mask.shape
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side_px, h), min(left + side_px, w)
    if sy1 > sy0 and sx1 > sx0:
        region = image[sy0:sy1, sx0:sx1]
        inside = mask[sy0:sy1, sx0:sx1]
        canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = np.where(inside[..., None], region, fill_rgb)
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BICUBIC))


class TextSegmenter:
    """Text -> mask by ranking SAM's masks with CLIP.

    Args:
        predictor: the `SamPredictor` for the candidates (and the point fix).
        encoder: a `TextImageEncoder` (`OpenClipEncoder`).
        settings: candidates, crops and ranking (default: the `text-clip` preset); see `from_preset`.
    """

    def __init__(
        self, predictor: SamPredictor, encoder: TextImageEncoder, settings: TextSettings | None = None
    ) -> None:
        self.predictor = predictor
        self.encoder = encoder
        self.settings = settings or PRESETS["text-clip"]
        amg = dataclasses.asdict(self.settings.amg_settings())
        self.generator = AutomaticMaskGenerator(predictor, keep_logits=True, **amg)
        self._cache: TextCandidates | None = None
        self._text_cache: dict[str, torch.Tensor] = {}  # prompt -> its embedding (the ensemble is costly)

    @classmethod
    def from_preset(
        cls, predictor: SamPredictor, name: str, *, encoder: TextImageEncoder, **overrides
    ) -> TextSegmenter:
        """A segmenter with `PRESETS[name]`, any `TextSettings` field overridden by keyword (`amg`
        entries are merged into the preset's)."""
        return cls(predictor, encoder, preset_with_overrides(PRESETS, name, overrides))

    def candidates(self, image) -> TextCandidates:
        """The image's candidates; computed once and reused while the same image is queried."""
        image = load_image(image)
        if self._cache is not None and np.array_equal(self._cache.image, image):
            return self._cache
        masks = self.generator.generate(image)
        size = self.encoder.input_size
        crops = (
            np.stack(
                [
                    mask_crop(image, m, b, size, self.encoder.mean, self.settings.enlarge)
                    for m, b in zip(masks.masks(), masks.boxes, strict=True)
                ]
            )
            if len(masks)
            else np.zeros((0, size, size, 3), np.uint8)
        )
        features = self.encoder.encode_images(crops) if len(crops) else torch.zeros(0, 1)
        found = TextCandidates(image=image, masks=masks, features=features)
        self._cache = found
        return found

    def text_features(self, prompt: str) -> torch.Tensor:
        """`[D]` normalized mean of the prompt's template embeddings (computed once per prompt)."""
        if prompt not in self._text_cache:
            embedded = self.encoder.encode_texts([t.format(prompt) for t in self.settings.templates])
            self._text_cache[prompt] = torch.nn.functional.normalize(embedded.mean(0), dim=0)
        return self._text_cache[prompt]

    def query(self, image, prompt: str, *, point: tuple[float, float] | None = None, all: bool = False) -> TextResult:
        """The mask that best matches `prompt` in `image`.

        Args:
            point: (x, y) pixels: re-prompt SAM with this positive click plus the chosen mask's logits
                (the paper's fix for wrong picks); the returned mask is SAM's answer.
            all: return every candidate within the margin (plural queries: "the wheels").

        Raises:
            ValueError: an empty prompt.
        """
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("the text prompt is empty")
        found = self.candidates(image)
        masks = found.masks
        if len(masks) == 0:
            return TextResult(prompt, None, 0.0, -1, [], [])
        text = self.text_features(prompt).to(found.features.device)
        similarity = found.features @ text  # [K] cosine
        probs = torch.softmax(self.encoder.logit_scale * similarity, 0)
        order = torch.argsort(probs, descending=True).tolist()
        best = order[0]
        selected = [i for i in order if probs[i] >= self.settings.margin * probs[best]] if all else [best]
        areas = masks.areas
        ranking = [
            {
                "index": i,
                "probability": float(probs[i]),
                "similarity": float(similarity[i]),
                "area": int(areas[i]),
                "bbox": xyxy_to_xywh(masks.boxes[i]),
            }
            for i in order
        ]
        mask = np.any([decode_rle(masks.rles[i]).astype(bool) for i in selected], axis=0)
        result = TextResult(prompt, mask, float(probs[best]), best, selected, ranking)
        if point is not None:
            result = dataclasses.replace(result, mask=self._refine(found, best, point), refined_by_point=tuple(point))
        return result

    def _refine(self, found: TextCandidates, index: int, point: tuple[float, float]) -> np.ndarray:
        self.predictor.set_image(found.image)
        logits = found.masks.low_res_logits[index][None, None]  # [1, 1, S, S]
        out = self.predictor.predict(points=[point], labels=[1], mask_input=logits, multimask=False)
        self.predictor.reset_image()
        return out.masks[0, 0]
