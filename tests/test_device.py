"""The one device rule every model of the package follows (SAM, CLIP, detectors)."""

from __future__ import annotations

import pytest
import torch

from samtasks.utils.device import resolve_device


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_the_best_available_device(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device(None) == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


def test_unavailable_or_unknown_devices_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda:1 requested but CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="mps requested but MPS is not available"):
        resolve_device(torch.device("mps"))
    with pytest.raises(ValueError, match="device: .*gpu"):
        resolve_device("gpu")
