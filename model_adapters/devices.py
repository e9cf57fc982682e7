"""Which torch device the local adapters compute on.

`pick_device()` is called when a model or a computation needs a device, never
at import time, so the environment it reads is the one in force at that call.

Override with the environment variable ``STUDIO_DEVICE`` (``cpu``, ``cuda``,
``cuda:1``, ``mps``...). Without it: CUDA when available, else CPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV_VAR = "STUDIO_DEVICE"


def pick_device() -> torch.device:
    """The device to compute on: ``$STUDIO_DEVICE`` if set, else cuda if available, else cpu.

    Raises ValueError when the override names a device torch does not know, or a
    CUDA device when CUDA is not available (failing loudly beats silently running
    somewhere other than where the operator asked).
    """
    override = os.environ.get(DEVICE_ENV_VAR, "").strip()
    if override:
        try:
            device = torch.device(override)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{DEVICE_ENV_VAR}={override!r} is not a torch device: {exc}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV_VAR}={override!r} asks for CUDA, but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
