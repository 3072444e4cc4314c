"""Checkpoint files: where they are cached, how they are downloaded and verified, how they are read."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, downloaded, read or matched to its model."""


@dataclass(frozen=True)
class CheckpointInfo:
    """An official checkpoint: where to get it and the MD5 its file must have."""

    url: str
    md5: str | None  # None only where no digest is published: the download is then not verified

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def cache_dir() -> Path:
    """`$SAMTASKS_HOME`, default `~/.cache/samtasks`."""
    return Path(os.environ.get("SAMTASKS_HOME") or Path.home() / ".cache" / "samtasks")


def cached_path(info: CheckpointInfo) -> Path:
    """Where `info`'s file lives once downloaded."""
    return cache_dir() / info.filename


def download(url: str, dest: Path, *, md5: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Downloads `url` to `dest` through a temporary file renamed only when complete and verified.

    Raises:
        CheckpointError: the transfer fails or is cut short (nothing is left at `dest`), or the
            file's MD5 differs from `md5`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise CheckpointError(f"download of {url} stopped after {received} of {total} bytes")
        if md5 is not None and digest.hexdigest() != md5:
            raise CheckpointError(
                f"{url} downloaded with MD5 {digest.hexdigest()}, expected {md5}: the file is corrupt or not the "
                "official one"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise CheckpointError(
            f"could not download {url} ({getattr(err, 'reason', err)}); fetch it by hand and put it at {dest}"
            ", or pass a local checkpoint path"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_checkpoint(checkpoint: str | Path | None, info: CheckpointInfo | None, *, progress: bool) -> Path | None:
    """The local file to load: `checkpoint` if given (a path or an http(s) URL), else `info`'s
    cached file, downloaded if absent; None when there is nothing to load (random weights)."""
    if checkpoint is not None:
        text = str(checkpoint)
        if text.startswith(("http://", "https://")):
            dest = cache_dir() / text.rsplit("/", 1)[-1]
            return dest if dest.is_file() else download(text, dest, progress=progress)
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        return path
    if info is None:
        return None
    path = cached_path(info)
    return path if path.is_file() else download(info.url, path, md5=info.md5, progress=progress)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict with `weights_only=True`, unwrapping `{"model": ...}` (SAM 2.1's files) and
    `{"state_dict": ...}`; a truncated or foreign file is a CheckpointError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise CheckpointError(f"cannot read checkpoint {path}: {err.__class__.__name__}: {err}".strip()) from err
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} is not a SAM state dict (a mapping of parameter names to tensors)")
    return state
