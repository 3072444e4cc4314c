"""The one rule that picks a torch device, for every model the package builds (SAM, CLIP, detectors)."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> cuda if available, else mps if available, else cpu."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps requested but MPS is not available")
    return device
