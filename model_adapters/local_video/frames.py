"""What both frame paths share: the source's pixel density, the still's resize, and writable
views of a frame's planes."""

from __future__ import annotations

import av
import numpy as np
import torch
import torch.nn.functional as F

OVERSAMPLE = 1.10  # source px per output px at the tightest zoom; keeps frac(r) >= 0.1


def plane_tensors(frame: av.VideoFrame) -> list[torch.Tensor]:
    """Writable (height, width) uint8 views of a frame's planes (no copy)."""
    views = []
    for plane in frame.planes:
        array = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        views.append(torch.from_numpy(array))
    return views


def resize_rgb(rgb: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (3, H, W) to uint8 (3, height, width): bicubic, antialiased when shrinking."""
    if rgb.shape[1:] == (height, width):
        return rgb
    x = rgb.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out[0].contiguous()
