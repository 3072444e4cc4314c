"""Reading images into the one format the predictor takes, `uint8 [H, W, 3]` RGB; writing edge maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(ValueError):
    """An image file cannot be read or decoded."""


def _pillow_open():
    """Pillow's own `Image.open`, even after another package replaced it process-wide.

    ultralytics swaps `PIL.Image.open` for a wrapper that, on an unidentifiable file, tries to
    install a plugin package and raises ModuleNotFoundError offline; a wrapper keeps the original
    among its globals, so it is found there.
    """
    current = Image.open
    if current.__module__ == "PIL.Image":
        return current
    for value in getattr(current, "__globals__", {}).values():
        if callable(value) and getattr(value, "__module__", None) == "PIL.Image" and value.__name__ == "open":
            return value
    return current


_PILLOW_OPEN = _pillow_open()


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> `uint8 [H, W, 3]` RGB; 16-bit and float images are scaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_rgb_uint8(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, like an image viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Converts an image array to `uint8 [H, W, 3]` RGB.

    Accepts `[H, W]` grayscale, `[H, W, 1]`, `[H, W, 3]` and `[H, W, 4]` (alpha dropped), as uint8,
    uint16 (scaled by 1/257), bool, or float in [0, 1].

    Raises:
        ValueError: any other shape or dtype.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ValueError(f"image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype in (np.uint16, np.int32, np.uint32):
        # 16-bit images (also read by PIL as int32): full range maps to 0..255.
        return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image has NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def load_image(image: np.ndarray | Image.Image | str | Path) -> np.ndarray:
    """Loads `image` as `uint8 [H, W, 3]` RGB.

    Args:
        image: an array (see `to_rgb_uint8`), a PIL image, or a file path. Files get their EXIF
            orientation applied.

    Raises:
        ImageReadError: a file that is missing, unreadable, truncated or not an image (the message
            names the file).
        ValueError: an array of unsupported shape or dtype.
    """
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            with _PILLOW_OPEN(path) as pil:
                pil = ImageOps.exif_transpose(pil)
                pil.load()
                return _pil_to_rgb(pil)
        except FileNotFoundError as err:
            raise ImageReadError(f"image file {path} does not exist") from err
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(f"cannot read image {path}: {err}") from err
    raise TypeError(f"expected a numpy array, PIL image or path, got {type(image).__name__}")


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the long side to `long_side`, rounded half up as SAM does."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


EDGE_QUANTIZE = ("round", "floor")  # `save_edge_map`'s rules from [0, 1] to 8 bits


def save_edge_map(path: str | Path, edges: np.ndarray, *, quantize: str = "round") -> Path:
    """Writes `float [H, W]` in [0, 1] as an 8-bit grayscale PNG, the format the BSDS benchmark reads:
    `round(255 * e)`, or with `quantize="floor"` the re-implementation's `uint8(255 * e)` (truncation,
    in float32 as it computes)."""
    if quantize not in EDGE_QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(EDGE_QUANTIZE)}, got {quantize!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(edges, np.float64)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise ValueError(f"an edge map must be a finite [H, W] array, got shape {array.shape}")
    array = np.clip(array, 0, 1)
    if quantize == "round":
        levels = np.round(array * 255)
    else:
        levels = np.floor(array.astype(np.float32) * np.float32(255))
    Image.fromarray(levels.astype(np.uint8)).save(path)
    return path


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(source: str | Path) -> list[Path]:
    """The image files named by `source`: one file, a folder (its images, sorted, not recursive) or a
    glob pattern such as `photos/*.jpg`.

    Raises:
        ImageReadError: nothing matches (the message names `source`).
    """
    text = str(source)
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ImageReadError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return found
    if path.is_file():
        return [path]
    if any(c in text for c in "*?["):
        import glob

        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise ImageReadError(f"no files match {text}")
        return found
    raise ImageReadError(f"image file or folder {path} does not exist")
