"""The CLI called through `main(argv)`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import samtasks
from samtasks.cli import main

from .conftest import random_image


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(random_image(np.random.default_rng(0), 60, 80)).save(path)
    return path


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert samtasks.__version__ in capsys.readouterr().out


def test_models_lists_specs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMTASKS_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_h_4b8939.pth" in out and "tiny" in out


def test_point_writes_outputs(image_file, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    argv = ["point", str(image_file), "--point", "40,30", "--point", "5,5", "--label", "1", "--label", "0"]
    argv += ["--box", "10,10,70,50", "--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "photo.json").read_text())
    assert len(record["masks"]) == 3 and record["chosen"] in (0, 1, 2)
    best = max(record["masks"], key=lambda m: m["predicted_iou"])
    assert best["index"] == record["chosen"]
    mask = np.asarray(Image.open(out / "photo_mask.png"))
    assert mask.shape == (60, 80) and set(np.unique(mask)) <= {0, 255}
    assert int((mask > 0).sum()) == best["area"]
    assert Image.open(out / "photo_overlay.png").size == (80, 60)


def test_compile_flag_compiles_the_encoder(image_file, tiny_checkpoint, tmp_path, monkeypatch):
    """`--compile` reaches `SamPredictor(compile=True)` (torch.compile itself replaced by a spy:
    compiling takes 20 s; `test_compiled_encoder_matches_eager` runs it for real)."""
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    argv = ["point", str(image_file), "--point", "40,30", "--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert compiled == []
    assert main([*argv, "--out", str(tmp_path / "b"), "--compile"]) == 0
    assert [fn.__name__ for fn in compiled] == ["encode"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--point", "400,30"], 1, "outside the 80x60 image"),
        (["--point", "4"], 2, "--point expects 2"),
        ([], 2, "at least one --point"),
        (["--point", "1,1", "--label", "1", "--label", "0"], 2, "--label given 2 times"),
    ],
)
def test_point_bad_arguments(image_file, tmp_path, capsys, extra, code, message):
    assert main(["point", str(image_file), "--sam", "tiny", "--out", str(tmp_path), *extra]) == code
    assert message in capsys.readouterr().err


def test_point_missing_image_and_offline_download(tmp_path, capsys, monkeypatch):
    assert main(["point", str(tmp_path / "nope.jpg"), "--point", "1,1", "--sam", "tiny"]) == 1
    assert "nope.jpg does not exist" in capsys.readouterr().err
    monkeypatch.setenv("SAMTASKS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("urllib.request.urlopen", _offline)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main(["point", str(image), "--point", "1,1", "--sam", "vit_b"]) == 1
    err = capsys.readouterr().err
    assert "sam_vit_b_01ec64.pth" in err and str(tmp_path / "home") in err and "Traceback" not in err
    assert "--sam-checkpoint PATH" in err


def _offline(*args, **kwargs):
    import urllib.error

    raise urllib.error.URLError("network unreachable")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, samtasks; bad = {'ultralytics', 'open_clip', 'lvis', 'cv2'} & set(sys.modules); print(bad)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "set()"


def test_proposals_command_on_a_folder(tmp_path, tiny_checkpoint, capsys):
    from samtasks.utils.masks import decode_rle

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(random_image(np.random.default_rng(i), 50, 70)).save(folder / f"im{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    argv = ["proposals", str(folder), "--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "--out", str(out)]
    argv += ["--set", "points_per_side=4", "--set", "box_nms_thresh=1.0", "-q"]
    assert main(argv) == 1  # the broken file is reported, the others are done
    record = json.loads((out / "im0.png.json").read_text())
    assert record["image"] == {"file_name": "im0.png", "height": 50, "width": 70}
    first = record["annotations"][0]
    assert {
        "segmentation",
        "bbox",
        "area",
        "predicted_iou",
        "stability_score",
        "point_coords",
        "crop_box",
        "score",
    } <= set(first)
    assert decode_rle(first["segmentation"]).sum() == first["area"]
    assert (out / "im1.png_overlay.png").is_file() and not (out / "broken.jpg.json").exists()
    # Finished images are skipped on a rerun; other settings are refused, naming the keys; --overwrite
    # redoes everything with the new ones.
    stamp = (out / "im0.png.json").stat().st_mtime_ns
    assert main(argv) == 1
    assert (out / "im0.png.json").stat().st_mtime_ns == stamp
    assert main([*argv, "--preset", "official", "--set", "pred_iou_thresh=0"]) == 1
    assert "preset (now 'official', recorded 'proposals-lvis')" in capsys.readouterr().err
    assert main([*argv, "--preset", "official", "--set", "pred_iou_thresh=0", "--overwrite"]) == 1
    assert json.loads((out / "im0.png.json").read_text())["preset"] == "official"


def test_proposals_and_bench_usage_errors(tmp_path, image_file, capsys):
    assert main(["proposals", str(image_file), "--preset", "nope"]) == 2
    assert "--preset must be one of" in capsys.readouterr().err
    assert main(["proposals", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "lvis-proposals", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "LVIS annotation file not found" in capsys.readouterr().err
    assert main(["bench", "coco-proposals", "--data", str(tmp_path), "--set", "foo=1", "--out", str(tmp_path)]) == 1
    assert "unknown key 'foo'" in capsys.readouterr().err


def test_bench_options_apply_to_the_benchmarks_that_take_them(tmp_path, capsys):
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(["bench", "coco-text", *argv, "--detector", "yolov8"]) == 2
    assert "--detector applies to coco-instance, lvis-instance only" in capsys.readouterr().err
    assert main(["bench", "lvis-instance", *argv, "--datasets", "lvis"]) == 2
    assert "--datasets applies to single-point only" in capsys.readouterr().err
    assert main(["bench", "single-point", *argv]) == 2
    assert "single-point needs --config" in capsys.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_errors_are_one_line_and_verbose_adds_the_traceback(tmp_path, capsys, caplog, verbose):
    argv = ["bench", "coco-proposals", "--data", str(tmp_path), "--set", "foo=1", "--out", str(tmp_path)]
    assert main(["-v", *argv] if verbose else argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "samtasks bench: error:" in err and "unknown key 'foo'" in err
    shown = caplog.text + err
    assert ("Traceback" in shown and "in load_config" in shown) is verbose
