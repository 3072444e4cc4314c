"""The folder commands as `FolderJob`s: what each writes per image and for the whole folder.

Every output is named after the image id (its path relative to the input root, extension
included): `<id>.json` + `<id>_overlay.png` (proposals), `<id>.png` (edges), `<id>_overlay.png`,
`labels/<id>.txt`, `images/<id><ext>`, `coco_results.json`, `dataset.yaml` (instance),
`<id>_text.json`, `<id>_<prompt>_mask.png`, `<id>_<prompt>_overlay.png` (text). Settings are checked
when a job is made, before any model is built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from samtasks.evaluation.config import ModelConfig, to_dict
from samtasks.evaluation.folder import FolderImage, output_path
from samtasks.utils.files import atomic_path, save_image, write_text
from samtasks.utils.image import load_image
from samtasks.utils.settings import preset_with_overrides
from samtasks.utils.viz import draw_overlay

if TYPE_CHECKING:
    from samtasks.tasks.instance import InstanceSettings

logger = logging.getLogger(__name__)

INSTANCE_FORMATS = ("coco", "png", "yolo")


def _model_settings(model: ModelConfig) -> dict:
    return {"sam": model.name, "checkpoint": model.checkpoint, "dtype": model.dtype}


class ProposalsJob:
    """SA-1B-style JSON (`<id>.json`) and an overlay of the largest masks per image.

    Args:
        preset: a proposals preset (`samtasks.tasks.proposals.PRESETS`: ranked and cut) or an AMG preset
            (`samtasks.tasks.amg.PRESETS`: every mask, in the generator's order).
        knobs: AMG settings overriding the preset's.
        overlay_max: masks drawn on the overlay.
    """

    name = "proposals"

    def __init__(self, model: ModelConfig, preset: str, knobs: dict, overlay_max: int = 200) -> None:
        from samtasks.tasks.amg import PRESETS as AMG_PRESETS
        from samtasks.tasks.proposals import PRESETS

        if preset in PRESETS:
            self.task = preset_with_overrides(PRESETS, preset, {"amg": knobs})
        elif preset in AMG_PRESETS:
            self.task = preset_with_overrides(AMG_PRESETS, preset, knobs)
        else:
            raise ValueError(f"--preset must be one of {', '.join([*PRESETS, *AMG_PRESETS])}, got {preset!r}")
        if overlay_max < 0:
            raise ValueError(f"--overlay-max must be >= 0, got {overlay_max}")
        self.model, self.preset, self.overlay_max = model, preset, overlay_max
        self.settings = {
            "model": _model_settings(model),
            "preset": preset,
            "task": to_dict(self.task),
            "overlay_max": overlay_max,
        }
        self.generator = None

    def setup(self, device: str | None) -> None:
        from samtasks.tasks.amg import AmgSettings, AutomaticMaskGenerator
        from samtasks.tasks.proposals import ProposalGenerator

        predictor = self.model.predictor(device)
        if isinstance(self.task, AmgSettings):
            self.generator = AutomaticMaskGenerator(predictor, **dataclasses.asdict(self.task))
        else:
            self.generator = ProposalGenerator(predictor, self.task)

    def process(self, image: FolderImage, out: Path) -> dict:
        from samtasks.utils.masks import RleMasks

        pixels = load_image(image.path)
        result = self.generator.generate(pixels)
        masks, scores = (result.masks, result.scores) if hasattr(result, "scores") else (result, result.predicted_iou)
        records = masks.records()
        for i, (record, score) in enumerate(zip(records, scores, strict=True)):
            record["id"] = i
            record["score"] = float(score)
        h, w = pixels.shape[:2]
        sa1b = {"image": {"file_name": image.id, "height": h, "width": w}, "preset": self.preset}
        sa1b["annotations"] = records
        shown = np.argsort([-r["area"] for r in records[: self.overlay_max]], kind="stable")
        masks = RleMasks([records[i]["segmentation"] for i in shown])  # decoded one at a time
        save_image(draw_overlay(pixels, masks), output_path(out, image.id, "_overlay.png"))
        write_text(output_path(out, image.id, ".json"), json.dumps(sa1b))
        return {"masks": len(records)}

    def finish(self, records: dict[str, dict], out: Path) -> None:
        """Nothing folder-wide: each image's JSON is complete."""


class EdgesJob:
    """An 8-bit PNG soft edge map (`<id>.png`) per image.

    Args:
        preset: an edges preset (`samtasks.tasks.edges.PRESETS`).
        knobs: `EdgeSettings` fields and `AmgSettings` fields (these merged into the preset's `amg`),
            overriding the preset's.
    """

    name = "edges"

    def __init__(self, model: ModelConfig, preset: str, knobs: dict) -> None:
        from samtasks.tasks.amg import AmgSettings
        from samtasks.tasks.edges import PRESETS, EdgeSettings

        if preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        edge_fields = {f.name for f in dataclasses.fields(EdgeSettings)} - {"amg", "amg_preset"}
        amg_fields = {f.name for f in dataclasses.fields(AmgSettings)}
        unknown = sorted(set(knobs) - edge_fields - amg_fields)
        if unknown:
            raise ValueError(
                f"--set: unknown knob(s) {', '.join(unknown)}; edge knobs: {', '.join(sorted(edge_fields))}"
            )
        chosen = {k: v for k, v in knobs.items() if k in edge_fields}
        chosen["amg"] = {k: v for k, v in knobs.items() if k not in edge_fields}
        try:
            settings = preset_with_overrides(PRESETS, preset, chosen)
        except ValueError as err:
            raise ValueError(f"--set: {err}") from err
        self.model, self.task = model, settings
        self.settings = {"model": _model_settings(model), "task": to_dict(settings)}
        self.detector = None

    def setup(self, device: str | None) -> None:
        from samtasks.tasks.edges import EdgeDetector

        self.detector = EdgeDetector(self.model.predictor(device), self.task)

    def process(self, image: FolderImage, out: Path) -> dict:
        result = self.detector.detect(load_image(image.path))
        with atomic_path(output_path(out, image.id, ".png")) as tmp:
            result.save(tmp)
        return {"masks": result.num_masks}

    def finish(self, records: dict[str, dict], out: Path) -> None:
        """Nothing folder-wide: the maps are the output."""


@dataclasses.dataclass(frozen=True)
class DetectorChoice:
    """Where `instance` gets its boxes: a COCO results JSON (`detections`) or a live detector."""

    detections: str | None = None
    name: str = "yolov8"
    weights: str | None = None
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.conf <= 1 or not 0 <= self.iou <= 1:
            raise ValueError(f"--conf and --iou must be in [0, 1], got {self.conf} and {self.iou}")
        if self.max_det < 1:
            raise ValueError(f"--max-det must be >= 1, got {self.max_det}")


def instance_formats(text: str) -> set[str]:
    """The `--format` list ("coco,png") as a set; a `ValueError` names a format not in `INSTANCE_FORMATS`."""
    formats = {f.strip() for f in text.split(",") if f.strip()}
    if not formats or formats - set(INSTANCE_FORMATS):
        raise ValueError(f"--format takes a comma-separated subset of coco,png,yolo, got {text!r}")
    return formats


class InstanceJob:
    """Instance masks from detector boxes: `coco_results.json`, overlays, a YOLO dataset.

    Args:
        formats: a subset of `INSTANCE_FORMATS` (see `instance_formats`).
        task: the segmenter's settings (default: the `instance-boxes` preset).

    Raises:
        ValueError: an unreadable detections file (read here, before any model is built).
    """

    name = "instance"

    def __init__(
        self, model: ModelConfig, detector: DetectorChoice, formats: set[str], task: InstanceSettings | None = None
    ) -> None:
        from samtasks.tasks.detectors import PrecomputedDetections
        from samtasks.tasks.instance import PRESETS

        self.model, self.detector, self.formats = model, detector, set(formats)
        self.task = task or PRESETS["instance-boxes"]
        # Read now: a missing or malformed file is an error before any model is built.
        self.boxes = (
            PrecomputedDetections(detector.detections, min_score=detector.conf) if detector.detections else None
        )
        self.settings = {
            "model": _model_settings(model),
            "detector": to_dict(detector),
            "task": to_dict(self.task),
            "formats": sorted(self.formats),
        }
        self.segmenter = None

    def setup(self, device: str | None) -> None:
        from samtasks.tasks.detectors import make_detector
        from samtasks.tasks.instance import InstanceSegmenter

        d = self.detector
        boxes = self.boxes
        where = self.model.torch_device(device)
        if boxes is None:
            classes = list(d.classes) if d.classes is not None else None
            boxes = make_detector(
                d.name, d.weights, conf=d.conf, iou=d.iou, max_det=d.max_det, classes=classes, device=where
            )
        self.segmenter = InstanceSegmenter(self.model.predictor(where), boxes, **dataclasses.asdict(self.task))

    def process(self, image: FolderImage, out: Path) -> dict:
        from samtasks.utils.export import coco_results, yolo_label_lines

        pixels = load_image(image.path)
        instances = self.segmenter.segment(pixels, image_id=image.id)
        h, w = pixels.shape[:2]
        if "png" in self.formats:
            captions = [
                f"{instances.names.get(int(c), c)} {s:.2f}"
                for c, s in zip(instances.labels, instances.scores, strict=True)
            ]
            overlay = draw_overlay(pixels, instances.masks, boxes=instances.boxes, labels=captions)
            save_image(overlay, output_path(out, image.id, "_overlay.png"))
        if "yolo" in self.formats:
            lines = "".join(line + "\n" for line in yolo_label_lines(instances, h, w))
            write_text(output_path(out / "labels", image.id, ".txt"), lines)
            target = output_path(out / "images", image.id, image.path.suffix)
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copy2(image.path, tmp)
        return {
            "height": h,
            "width": w,
            "names": {str(k): v for k, v in instances.names.items()},
            "results": coco_results(instances, image.id),
        }

    def finish(self, records: dict[str, dict], out: Path) -> None:
        from samtasks.utils.export import write_yolo_dataset_yaml

        if "coco" in self.formats:
            results = [{**e, "file_name": key} for key, r in sorted(records.items()) for e in r["results"]]
            write_text(out / "coco_results.json", json.dumps(results))
        if "yolo" in self.formats:
            write_yolo_dataset_yaml(out, {int(k): v for r in records.values() for k, v in r["names"].items()})
        if self.boxes is not None and records and not any(r["results"] for r in records.values()):
            logger.warning(
                "no box of %s fell on any of the %d images (boxes are looked up by image_id or file_name: the "
                "file name, its stem, or the number in a COCO-style name)",
                self.boxes.path,
                len(records),
            )


class TextJob:
    """The masks text prompts describe: `<id>_text.json` and a mask and overlay per prompt.

    Args:
        clip: (open_clip architecture, pretrained tag or None for random weights).
        prompts: non-empty texts, each answered on every image.
        point: an optional (x, y) click that re-prompts SAM with the chosen mask.
        all: every candidate within the margin (plural queries).
    """

    name = "text"

    def __init__(
        self,
        model: ModelConfig,
        clip: tuple[str, str | None],
        prompts: list[str],
        *,
        point: tuple[float, float] | None = None,
        all: bool = False,
    ) -> None:
        prompts = [p.strip() for p in prompts]
        if not prompts or "" in prompts:
            raise ValueError("give at least one non-empty --prompt")
        self.model, self.clip, self.prompts, self.point, self.all = model, clip, prompts, point, all
        self.settings = {
            "model": _model_settings(model),
            "clip": list(clip),
            "prompts": prompts,
            "point": list(point) if point else None,
            "all": all,
        }
        self.segmenter = None

    def setup(self, device: str | None) -> None:
        from samtasks.tasks.text import OpenClipEncoder, TextSegmenter

        where = self.model.torch_device(device)
        encoder = OpenClipEncoder(self.clip[0], self.clip[1], device=where)
        self.segmenter = TextSegmenter(self.model.predictor(where), encoder)

    def process(self, image: FolderImage, out: Path) -> dict:
        pixels = load_image(image.path)
        report = {"image": image.id, "clip": list(self.clip), "queries": []}
        for prompt in self.prompts:
            result = self.segmenter.query(pixels, prompt, point=self.point, all=self.all)
            slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:40] or "prompt"
            entry = {"prompt": prompt, "index": result.index, "score": result.score, "selected": result.selected}
            entry["point"] = list(result.refined_by_point) if result.refined_by_point else None
            entry["ranking"] = result.ranking[:20]
            if result.mask is not None:
                mask_path = output_path(out, image.id, f"_{slug}_mask.png")
                save_image(Image.fromarray(result.mask.astype(np.uint8) * 255), mask_path)
                points = np.asarray([self.point]) if self.point else None
                overlay = draw_overlay(pixels, result.mask[None], points=points, point_labels=np.ones(1))
                save_image(overlay, output_path(out, image.id, f"_{slug}_overlay.png"))
                entry["files"] = [mask_path.name, f"{mask_path.name[: -len('_mask.png')]}_overlay.png"]
            report["queries"].append(entry)
        write_text(output_path(out, image.id, "_text.json"), json.dumps(report, indent=2))
        return {"found": sum(q["index"] >= 0 for q in report["queries"])}

    def finish(self, records: dict[str, dict], out: Path) -> None:
        """Nothing folder-wide: each image's report is complete."""
