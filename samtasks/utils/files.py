"""Output files that are never half written, and an exclusive lock on an output folder."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output folder cannot be created, written or locked; the message names it and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write; renamed onto `path` when the block ends
    without an error, removed otherwise, so `path` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode())  # mkstemp makes 0600; a finished file gets the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def default_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str | Path, text: str) -> Path:
    """Writes `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_image(image, path: str | Path) -> Path:
    """Saves a PIL image atomically, in the format `path`'s suffix names."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
    return path


def prepare_folder(path: str | Path, flag: str = "--out") -> Path:
    """Creates the output folder `path` (and parents) and checks it can be written; an `OutputError`
    names `flag` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except FileExistsError as err:
        raise OutputError(f"{flag} {path}: a file is in the way (give a folder path)") from err
    except OSError as err:
        raise OutputError(f"{flag} {path} is not writable ({err.strerror}); choose another {flag}") from err
    return path


class FolderLock:
    """An exclusive lock on an output folder, held by one process at a time (`flock` on
    `<folder>/<name>`, released by the OS even if the process is killed). The lock file says who
    holds it (pid, host, start time), so a second process can name the first."""

    def __init__(self, folder: str | Path, name: str = ".lock") -> None:
        self.path = Path(folder) / name
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock; an `OutputError` names the holder when another process has it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "{}"
            os.close(fd)
            raise OutputError(
                f"{self.path.parent} is in use by another samtasks process ({_describe(holder)}); wait for it to "
                "finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        info["since"] = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
