"""Image loading: formats, EXIF orientation, clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samtasks.utils.image import ImageReadError, load_image, resized_shape, to_rgb_uint8


def test_array_layouts():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert load_image(gray).shape == (3, 4, 3)
    assert (load_image(gray)[..., 1] == gray).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    assert (load_image(rgba) == [200, 0, 0]).all()
    sixteen = np.full((2, 2), 65535, np.uint16)
    assert (load_image(sixteen) == 255).all()
    assert (load_image(np.full((2, 2, 3), 0.5)) == 128).all()


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros(5)])
def test_bad_array_shapes(bad):
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(bad)


def test_files_of_many_modes(tmp_path):
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    assert load_image(tmp_path / "gray.png").shape == (20, 30, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)  # opaque alpha: unchanged
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png")[..., 0], rgb[..., 0])


def test_exif_orientation_applied(tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255  # left stripe
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    pil.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.shape == (20, 10, 3)
    assert loaded[:5].mean() > 200 and loaded[-5:].mean() < 50  # the stripe is now at the top


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.jpg does not exist"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_resized_shape_rounds_like_sam():
    assert resized_shape(1080, 810, 1024) == (1024, 768)
    assert resized_shape(321, 481, 1024) == (683, 1024)
    assert resized_shape(100, 100, 1024) == (1024, 1024)


def test_reading_is_immune_to_the_ultralytics_patch(tmp_path):
    pytest.importorskip("ultralytics")
    import ultralytics.utils.patches  # noqa: F401  (replaces PIL.Image.open process-wide)

    assert Image.open.__module__ != "PIL.Image"
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        load_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        load_image(empty)
