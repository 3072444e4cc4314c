"""The folder runner: stable ids, recorded settings, the output-folder lock, failures, Ctrl-C,
atomic writes; and the folder commands built on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtasks.cli import main
from samtasks.evaluation.config import ConfigError
from samtasks.evaluation.folder import FolderImage, folder_images, run_folder
from samtasks.evaluation.runner import RunInterrupted
from samtasks.utils.files import FolderLock, OutputError, atomic_path, write_text

from .conftest import random_image

GOLDEN = Path(__file__).parent / "golden" / "bsds500-bench"


class CountingJob:
    """Writes `<id>.txt` holding the image's height; fails on images whose name says so."""

    name = "count"

    def __init__(self, scale: int = 1, interrupt_at: int | None = None) -> None:
        self.settings = {"scale": scale, "points_per_batch": 8}
        self.processed: list[str] = []
        self.finished: dict | None = None
        self.interrupt_at = interrupt_at
        self.built = False

    def setup(self, device):
        self.built = True

    def process(self, image: FolderImage, out: Path) -> dict:
        if len(self.processed) == self.interrupt_at:
            raise KeyboardInterrupt
        if "bad" in image.id:
            raise ValueError(f"cannot read image {image.path}")
        self.processed.append(image.id)
        write_text(out / f"{image.id}.txt", str(Image.open(image.path).height))
        return {"height": Image.open(image.path).height}

    def finish(self, records: dict, out: Path) -> None:
        self.finished = records


def _images(folder: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(np.random.default_rng(i), 10 + i, 12)).save(folder / name)
    return folder


def test_ids_are_relative_paths_with_extension(tmp_path):
    folder = _images(tmp_path / "in", ["x.jpg", "x.png", "sub/y.png"])
    assert [im.id for im in folder_images(folder)] == ["x.jpg", "x.png"]  # a folder is not recursive
    assert [im.id for im in folder_images(f"{folder}/**/*.png")] == ["sub/y.png", "x.png"]
    assert [im.id for im in folder_images(folder / "sub" / "y.png")] == ["y.png"]
    job = CountingJob()
    report = run_folder(job, f"{folder}/**/*", tmp_path / "out", progress=False)
    assert report.done == 3 and sorted(job.finished) == ["sub/y.png", "x.jpg", "x.png"]
    assert {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.txt")} == {
        "x.jpg.txt",
        "x.png.txt",
        "sub/y.png.txt",
    }


def test_resume_settings_and_overwrite(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    run_folder(CountingJob(), folder, out, progress=False)
    again = CountingJob()
    report = run_folder(again, folder, out, progress=False)
    assert again.processed == [] and not again.built and report.done == 2
    with pytest.raises(ConfigError, match=r"scale \(now 2, recorded 1\)"):
        run_folder(CountingJob(scale=2), folder, out, progress=False)
    free = CountingJob()
    free.settings["points_per_batch"] = 2  # a resource: free to change
    run_folder(free, folder, out, progress=False)
    redo = CountingJob(scale=2)
    run_folder(redo, folder, out, overwrite=True, progress=False)
    assert redo.processed == ["a.png", "b.png"]
    assert json.loads((out / "records" / "count" / "settings.json").read_text())["scale"] == 2


def test_commands_sharing_a_folder_keep_their_own_records(tmp_path):
    folder = _images(tmp_path / "in", ["a.png"])
    run_folder(CountingJob(), folder, tmp_path / "out", progress=False)
    other = CountingJob(scale=3)
    other.name = "other"
    run_folder(other, folder, tmp_path / "out", progress=False)
    assert other.processed == ["a.png"]


def test_a_failed_start_records_no_settings(tmp_path):
    class Broken(CountingJob):
        def setup(self, device):
            raise ValueError("no such model")

    folder = _images(tmp_path / "in", ["a.png"])
    with pytest.raises(ValueError, match="no such model"):
        run_folder(Broken(scale=5), folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "records" / "count" / "settings.json").exists()
    run_folder(CountingJob(), folder, tmp_path / "out", progress=False)  # other settings are fine


def test_failures_are_recorded_and_retried(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "bad.png", "c.png"])
    job = CountingJob()
    report = run_folder(job, folder, tmp_path / "out", progress=False)
    assert report.done == 2 and list(report.failed) == ["bad.png"] and "cannot read" in report.failed["bad.png"]
    again = CountingJob()
    run_folder(again, folder, tmp_path / "out", progress=False)
    assert again.processed == []  # the bad image is tried again, and fails again


def test_ctrl_c_keeps_finished_images(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    with pytest.raises(RunInterrupted, match="interrupted after 1 of 3 images.*the same command resumes"):
        run_folder(CountingJob(interrupt_at=1), folder, tmp_path / "out", progress=False)
    again = CountingJob()
    run_folder(again, folder, tmp_path / "out", progress=False)
    assert again.processed == ["b.png", "c.png"]


def test_lock_names_the_holder(tmp_path):
    folder = _images(tmp_path / "in", ["a.png"])
    (tmp_path / "out").mkdir()
    with FolderLock(tmp_path / "out"):
        with pytest.raises(OutputError, match=rf"in use by another samtasks process \(pid {os.getpid()} on "):
            run_folder(CountingJob(), folder, tmp_path / "out", progress=False)
    run_folder(CountingJob(), folder, tmp_path / "out", progress=False)  # released


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    code = "import sys, time; from samtasks.utils.files import FolderLock; FolderLock(sys.argv[1]).acquire(); "
    code += "print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path):
        pass


def test_unusable_output_folders(tmp_path):
    folder = _images(tmp_path / "in", ["a.png"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="a file is in the way"):
        run_folder(CountingJob(), folder, tmp_path / "file", progress=False)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="is not writable"):
            run_folder(CountingJob(), folder, locked / "out", progress=False)


def test_atomic_writes_leave_the_old_file_on_error(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != oct(0o600)


# --- the commands --------------------------------------------------------------------------------------------


@pytest.fixture()
def same_stem(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_image(np.random.default_rng(0), 40, 50)).save(folder / "x.png")
    Image.fromarray(random_image(np.random.default_rng(1), 30, 50)).save(folder / "x.jpg")
    return folder


def test_same_stem_images_never_collide(same_stem, tmp_path, tiny_checkpoint):
    model = ["--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "-q"]
    out = tmp_path / "out"
    assert main(["proposals", str(same_stem), "--set", "points_per_side=2", *model, "--out", str(out / "p")]) == 0
    heights = {n: json.loads((out / "p" / f"{n}.json").read_text())["image"]["height"] for n in ("x.png", "x.jpg")}
    assert heights == {"x.png": 40, "x.jpg": 30}
    assert main(["edges", str(same_stem), "--set", "points_per_side=2", *model, "--out", str(out / "e")]) == 0
    assert sorted(p.name for p in (out / "e").glob("*.png")) == ["x.jpg.png", "x.png.png"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps([{"file_name": n, "bbox": [1, 1, 20, 20], "category_id": 1} for n in ("x.png", "x.jpg")])
    )
    argv = ["instance", str(same_stem), "--detections", str(boxes), "--format", "coco,yolo", *model]
    assert main([*argv, "--out", str(out / "i")]) == 0
    assert sorted(p.name for p in (out / "i" / "labels").iterdir()) == ["x.jpg.txt", "x.png.txt"]
    assert sorted(p.name for p in (out / "i" / "images").iterdir()) == ["x.jpg.jpg", "x.png.png"]
    results = json.loads((out / "i" / "coco_results.json").read_text())
    assert sorted(r["file_name"] for r in results) == ["x.jpg", "x.png"]


def test_instance_refuses_other_settings(same_stem, tmp_path, tiny_checkpoint, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"file_name": "x.png", "bbox": [1, 1, 20, 20], "category_id": 1}]))
    argv = ["instance", str(same_stem), "--detections", str(boxes), "--sam", "tiny", "--sam-checkpoint"]
    argv += [str(tiny_checkpoint), "--out", str(tmp_path / "out"), "-q"]
    assert main([*argv, "--max-det", "30"]) == 0
    assert main([*argv, "--max-det", "5"]) == 1
    err = capsys.readouterr().err
    assert "detector.max_det (now 5, recorded 30)" in err and "--overwrite" in err
    assert main([*argv, "--max-det", "5", "--overwrite"]) == 0


def test_ctrl_c_is_one_line(same_stem, tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from samtasks.evaluation.folder_jobs import EdgesJob

    def interrupted(self, image, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(EdgesJob, "process", interrupted)
    argv = ["edges", str(same_stem), "--sam", "tiny", "--sam-checkpoint", str(tiny_checkpoint), "-q"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"samtasks edges: interrupted after 0 of 2 images; finished ones are kept in {tmp_path / 'out'}, "
                   "the same command resumes"]  # fmt: skip


def test_output_errors_are_one_line(same_stem, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv in (
        ["proposals", str(same_stem)],
        ["edges", str(same_stem)],
        ["text", str(same_stem), "--prompt", "x"],
        ["instance", str(same_stem)],
        ["point", str(same_stem / "x.png"), "--point", "3,3", "--sam", "tiny"],
        ["eval-edges", "--pred", str(GOLDEN / "png"), "--gt", str(GOLDEN / "groundTruth"), "--thresholds", "3"],
    ):
        assert main([*argv, "--out", str(tmp_path / "file")]) == 1
        err = capsys.readouterr().err
        assert ("a file is in the way" in err or "File exists" in err) and "Traceback" not in err


def test_broken_pipe_is_quiet():
    """`samtasks models | head -1`: the reader goes away before the table is written."""
    code = "import sys; from samtasks.cli import main; sys.exit(main(['models']))"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait() == 0 and "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["proposals", "--set", "pred_iou_thresh=abc"], "pred_iou_thresh must be a finite number, got 'abc'"),
        (["proposals", "--set", "points_per_side=2.5"], "points_per_side must be an integer, got 2.5"),
        (["proposals", "--set", "box_nms_thresh=1.5"], "box_nms_thresh must be in [0.0, 1.0], got 1.5"),
        (["proposals", "--overlay-max", "-1"], "--overlay-max must be >= 0"),
        (["edges", "--set", "gate=maybe"], "gate must be true or false, got 'maybe'"),
        (["edges", "--set", "smooth_radius=-1"], "smooth_radius must be >= 0"),
        (["edges", "--set", "points_per_side=2.5"], "points_per_side must be an integer, got 2.5"),
        (["instance", "--conf", "1.5"], "--conf and --iou must be in [0, 1]"),
        (["instance", "--max-det", "0"], "--max-det must be >= 1"),
        (["text", "--prompt", " "], "at least one non-empty --prompt"),
    ],
)
def test_every_setting_is_checked_before_any_model(same_stem, tmp_path, capsys, argv, message, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr("samtasks.build.build_sam", no_model)
    command, *rest = argv
    assert main([command, str(same_stem), *rest, "--sam", "tiny", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_text_checks_the_path_before_clip(tmp_path, capsys):
    assert main(["text", str(tmp_path / "nope.jpg"), "--prompt", "a cat", "--out", str(tmp_path / "out")]) == 1
    assert "nope.jpg does not exist" in capsys.readouterr().err


def test_detections_that_match_nothing_are_reported(same_stem, tmp_path, tiny_checkpoint, caplog):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"file_name": "other.jpg", "bbox": [1, 1, 20, 20]}, {"file_name": "x.png",
                                 "bbox": [500, 500, 20, 20]}]))  # fmt: skip
    argv = ["instance", str(same_stem), "--detections", str(boxes), "--sam", "tiny", "--sam-checkpoint"]
    assert main([*argv, str(tiny_checkpoint), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert "all 1 boxes of image x.png lie outside its 50x40 pixels" in caplog.text
    assert f"no box of {boxes} fell on any of the 2 images" in caplog.text


@pytest.mark.slow
def test_two_torchrun_ranks_label_one_folder_as_shards(tmp_path, tiny_checkpoint):
    """`proposals` on 2 torchrun ranks: the same files as 1 process, each rank's records its own share."""
    names = ["a.png", "b.jpg", "c.png"]
    folder = _images(tmp_path / "in", names)
    command = ["proposals", str(folder), "--set", "points_per_side=2", "--sam", "tiny"]
    command += ["--sam-checkpoint", str(tiny_checkpoint), "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for out, prefix in {"one": [sys.executable], "two": torchrun}.items():
        done = subprocess.run(
            [*prefix, "-m", "samtasks.cli", *command, "--out", str(tmp_path / out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        for output in (f"{name}.json", f"{name}_overlay.png"):
            assert (tmp_path / "two" / output).read_bytes() == (tmp_path / "one" / output).read_bytes()
    records = tmp_path / "two" / "records" / "proposals"
    shards = {
        rank: [json.loads(line)["image_id"] for line in (records / f"rank{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    }
    assert shards == {0: ["a.png", "c.png"], 1: ["b.jpg"]}
    assert (tmp_path / "two" / ".lock").is_file() and (tmp_path / "two" / ".lock.rank1").is_file()
