"""Checkpoint files: where they are cached, how they are downloaded and verified, how they are read."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from samtasks.utils.files import default_mode


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, downloaded, read or matched to its model."""


@dataclass(frozen=True)
class CheckpointInfo:
    """An official checkpoint: where to get it and the digest its file must have (the published MD5
    or SHA-256)."""

    url: str
    # Both None where the publisher gives no checksum (SAM 2.x): then only the length is checked.
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def cache_dir() -> Path:
    """`$SAMTASKS_HOME`, default `~/.cache/samtasks`."""
    return Path(os.environ.get("SAMTASKS_HOME") or Path.home() / ".cache" / "samtasks")


def cached_path(info: CheckpointInfo) -> Path:
    """Where `info`'s file lives once downloaded."""
    return cache_dir() / info.filename


# Where to say a local file goes, for the messages.
LOCAL_FILE_HINT = "--sam-checkpoint PATH on the command line, model.checkpoint=PATH in a bench config"

# A `.part` file untouched this long belongs to a download that was killed, not to a running one.
STALE_PART_SECONDS = 3600


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Downloads `url` to `dest` through a temporary file renamed only when complete and verified
    (with the usual file mode); leftovers of killed downloads of `dest` are removed first.

    Raises:
        CheckpointError: the transfer fails or is cut short (nothing is left at `dest`), or the
            file's MD5 or SHA-256 differs from `md5` or `sha256`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for part in dest.parent.glob(f"{dest.name}.*.part"):
        if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
            part.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    expected = {name: value for name, value in (("md5", md5), ("sha256", sha256)) if value is not None}
    digests = {name: hashlib.new(name) for name in expected}
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise CheckpointError(f"download of {url} stopped after {received} of {total} bytes")
        for name, value in expected.items():
            if digests[name].hexdigest() != value:
                raise CheckpointError(
                    f"{url} downloaded with {name.upper()} {digests[name].hexdigest()}, expected {value}: the file is "
                    "corrupt or not the official one"
                )
        os.chmod(tmp, default_mode())  # mkstemp creates 0600
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise CheckpointError(
            f"could not download {url} ({getattr(err, 'reason', err)}); fetch it by hand and put it at {dest}"
            f", or pass your copy's path ({LOCAL_FILE_HINT})"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    for name, value in expected.items():
        _mark_verified(dest, f"{name}:{value}")
    return dest


def _marker(path: Path) -> Path:
    return path.parent / ".verified" / path.name


def _stamp(path: Path, digest: str) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns} {digest}"


def _mark_verified(path: Path, digest: str) -> None:
    marker = _marker(path)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(_stamp(path, digest))


def verify_cached(path: Path, info: CheckpointInfo) -> None:
    """Checks a cached file's published digest (SHA-256, else MD5; nothing when none is published),
    once: a marker (size, mtime, digest) under `.verified/` spares the hashing on later loads until
    the file changes.

    Raises:
        CheckpointError: the digest differs (the message says to delete the file).
    """
    name, value = ("sha256", info.sha256) if info.sha256 else ("md5", info.md5)
    if value is None:
        return
    marker = _marker(path)
    if marker.is_file() and marker.read_text() == _stamp(path, f"{name}:{value}"):
        return
    digest = hashlib.new(name)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    if digest.hexdigest() != value:
        raise CheckpointError(
            f"cached checkpoint {path} has {name.upper()} {digest.hexdigest()}, expected {value}: it is corrupt or "
            f"not the official file; delete it to download it again, or pass your own file ({LOCAL_FILE_HINT})"
        )
    _mark_verified(path, f"{name}:{value}")


def resolve_checkpoint(checkpoint: str | Path | None, info: CheckpointInfo | None, *, progress: bool) -> Path | None:
    """The local file to load: `checkpoint` if given (a path or an http(s) URL), else `info`'s
    cached file, downloaded if absent; None when there is nothing to load (random weights)."""
    if checkpoint is not None:
        text = str(checkpoint)
        if text.startswith(("http://", "https://")):
            dest = cache_dir() / text.rsplit("/", 1)[-1]
            return dest if dest.is_file() else download(text, dest, progress=progress)
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a folder; pass the .pth file itself")
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        return path
    if info is None:
        return None
    path = cached_path(info)
    if not path.is_file():
        return download(info.url, path, md5=info.md5, sha256=info.sha256, progress=progress)
    verify_cached(path, info)
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict with `weights_only=True`, unwrapping `{"model": ...}` (SAM 2.1's files) and
    `{"state_dict": ...}`; a truncated or foreign file is a CheckpointError.

    A zip-format file (what `torch.save` writes since torch 1.6, every official checkpoint) is memory
    mapped, not read: its tensors' pages are read when first used, so a model that takes them over
    (`build.load_weights`) holds its weights once, and keys it drops are never read. The mapping is
    private (writes to the tensors do not reach the file), but overwriting the file in place while a
    model built from it runs is undefined, as for any mapped file; a download replaces the file instead.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch .pth file, or cut short ({err.__class__.__name__}: {err})"
        ) from err
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a SAM state dict (a mapping of parameter names to tensors)")
    return state
