"""Specs against the official constructors, strict loading, and checkpoint download."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from samtasks import CheckpointError, build_sam
from samtasks.build import MODEL_SPECS
from samtasks.checkpoints import STALE_PART_SECONDS, CheckpointInfo, download
from samtasks.utils.files import default_mode

from .conftest import build_official


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "tiny"])
def test_manifest_equals_official(name):
    spec = MODEL_SPECS[name]
    with torch.device("meta"):
        ours = spec.build().state_dict()
        official = build_official(spec).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}


def test_tiny_builds_random_without_checkpoint():
    model = build_sam("tiny")
    assert not model.training
    assert model.image_encoder.img_size == 128


def test_unknown_spec_names_choices():
    with pytest.raises(ValueError, match="vit_b, vit_l, vit_h, tiny"):
        build_sam("vit_x")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam("tiny", tmp_path / "nope.pth")


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*cut\.pth"):
        build_sam("tiny", bad)


def test_text_file_and_folder_as_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("e" * 200)
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a PyTorch \.pth file"):
        build_sam("tiny", text)
    with pytest.raises(CheckpointError, match="is a folder; pass the .pth file itself"):
        build_sam("tiny", tmp_path)


def test_stale_partial_downloads_are_removed(server, tmp_path):
    url, root, _ = server
    (root / "w.pth").write_bytes(b"x" * 1000)
    dest = tmp_path / "cache" / "w.pth"
    dest.parent.mkdir()
    stale, fresh = dest.parent / "w.pth.abc.part", dest.parent / "w.pth.def.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * STALE_PART_SECONDS,) * 2)
    download(f"{url}/w.pth", dest, progress=False)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pth", "w.pth.def.part"]  # a running one is kept


def test_foreign_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a SAM state dict"):
        build_sam("tiny", path)


def test_strict_mismatch_names_keys(tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        build_sam("tiny", path)
    message = str(err.value)
    assert "'tiny'" in message and "mask_decoder.iou_token.weight" in message and "extra.weight" in message


def test_wrong_spec_is_recognized(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="looks like a 'tiny' checkpoint") as err:
        build_sam("vit_b", tiny_checkpoint)
    assert "shape mismatch" in str(err.value) or "missing keys" in str(err.value)


@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server over `tmp_path / 'www'`; `truncate` makes it cut bodies in half."""
    root = tmp_path / "www"
    root.mkdir()
    state = {"truncate": False}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

        def copyfile(self, source, outputfile):
            data = source.read()
            outputfile.write(data[: len(data) // 2] if state["truncate"] else data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, state
    httpd.shutdown()


@pytest.mark.parametrize("digest", ["md5", "sha256"])
def test_download_registry_checkpoint(server, tiny_checkpoint, tmp_path, monkeypatch, digest):
    url, root, _ = server
    (root / "sam_tiny_test.pth").write_bytes(tiny_checkpoint.read_bytes())
    home = tmp_path / "home"
    monkeypatch.setenv("SAMTASKS_HOME", str(home))
    info = CheckpointInfo(
        f"{url}/sam_tiny_test.pth", **{digest: hashlib.new(digest, tiny_checkpoint.read_bytes()).hexdigest()}
    )
    monkeypatch.setitem(MODEL_SPECS, "tiny", dataclasses.replace(MODEL_SPECS["tiny"], checkpoint=info))
    model = build_sam("tiny", progress=False)
    assert (home / "sam_tiny_test.pth").is_file()
    reference = torch.load(tiny_checkpoint, weights_only=True)
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], reference["mask_decoder.iou_token.weight"])
    assert sorted(p.name for p in home.iterdir()) == [".verified", "sam_tiny_test.pth"]  # no temporary file
    assert (home / "sam_tiny_test.pth").stat().st_mode & 0o777 == default_mode()
    (root / "sam_tiny_test.pth").unlink()
    build_sam("tiny", progress=False)  # cached: no second download
    # A cached file is checked against the digest once, then by its size and time only.
    hashed = []
    new = hashlib.new
    monkeypatch.setattr("hashlib.new", lambda *a: hashed.append(1) or new(*a))
    build_sam("tiny", progress=False)
    assert hashed == []
    (home / "sam_tiny_test.pth").write_bytes(tiny_checkpoint.read_bytes()[:-1] + b"x")  # same size, new content
    message = rf"cached checkpoint .*sam_tiny_test.pth has {digest.upper()} .* delete it"
    with pytest.raises(CheckpointError, match=message):
        build_sam("tiny", progress=False)


@pytest.mark.parametrize(("digest", "label"), [(dict(md5="0" * 32), "MD5"), (dict(sha256="0" * 64), "SHA256")])
def test_download_digest_mismatch_leaves_nothing(server, tmp_path, digest, label):
    url, root, _ = server
    (root / "w.pth").write_bytes(b"x" * 1000)
    dest = tmp_path / "cache" / "w.pth"
    with pytest.raises(CheckpointError, match=label):
        download(f"{url}/w.pth", dest, **digest, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    url, root, state = server
    (root / "w.pth").write_bytes(b"x" * 100_000)
    state["truncate"] = True
    dest = tmp_path / "cache" / "w.pth"
    with pytest.raises(CheckpointError, match="w.pth"):
        download(f"{url}/w.pth", dest, progress=False, timeout=5)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_url_names_url_and_destination(tmp_path):
    dest = tmp_path / "cache" / "sam.pth"
    with pytest.raises(CheckpointError) as err:
        download("http://127.0.0.1:9/sam.pth", dest, progress=False, timeout=5)
    assert "http://127.0.0.1:9/sam.pth" in str(err.value) and str(dest) in str(err.value)


def test_local_path_is_loaded(tiny_checkpoint):
    model = build_sam("tiny", Path(tiny_checkpoint))
    reference = torch.load(tiny_checkpoint, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's memory map (Linux)")
def test_weights_are_the_mapped_file_not_a_copy(tiny_checkpoint):
    model = build_sam("tiny", tiny_checkpoint)
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(tiny_checkpoint)):
            start, end = (int(v, 16) for v in line.split()[0].split("-"))
            regions.append((start, end))
    assert regions
    for key, value in model.state_dict().items():
        assert any(start <= value.data_ptr() < end for start, end in regions), key


def test_half_precision_file_loads_as_float32(tmp_path, tiny_checkpoint):
    reference = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in reference.items()}, path)
    weight = build_sam("tiny", path).state_dict()["mask_decoder.iou_token.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, reference["mask_decoder.iou_token.weight"].half().float())
