"""Colour: BT.709 limited-range RGB <-> Y'CbCr and the 4:2:0 chroma filters (torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# BT.709, limited ("tv") range. FFmpeg enum values (AVCOL_*).
KR, KB = 0.2126, 0.0722
AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709 = 1
AVCOL_RANGE_MPEG = 1


_YUV709 = torch.tensor(
    [
        [KR * 219 / 255, (1 - KR - KB) * 219 / 255, KB * 219 / 255],
        [-KR / (2 * (1 - KB)) * 224 / 255, -(1 - KR - KB) / (2 * (1 - KB)) * 224 / 255, 0.5 * 224 / 255],
        [0.5 * 224 / 255, -(1 - KR - KB) / (2 * (1 - KR)) * 224 / 255, -KB / (2 * (1 - KR)) * 224 / 255],
    ],
    dtype=torch.float32,
)
_YUV709_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float32)


def rgb_to_yuv709(rgb: torch.Tensor) -> torch.Tensor:
    """Float RGB (3, H, W) in 0..255 to float Y'CbCr, BT.709 limited range (Y 16..235, C 16..240)."""
    _, h, w = rgb.shape
    matrix, offset = _YUV709.to(rgb.device), _YUV709_OFFSET.to(rgb.device)
    return torch.addmm(offset[:, None], matrix, rgb.reshape(3, h * w)).reshape(3, h, w)


def yuv709_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_yuv709` for (…, 3) arrays (tests and previews)."""
    y = (yuv[..., 0] - 16.0) * (255.0 / 219.0)
    u = (yuv[..., 1] - 128.0) * (255.0 / 224.0) * 2.0 * (1.0 - KB)
    v = (yuv[..., 2] - 128.0) * (255.0 / 224.0) * 2.0 * (1.0 - KR)
    r = y + v
    b = y + u
    g = (y - KR * r - KB * b) / (1.0 - KR - KB)
    return np.clip(np.stack((r, g, b), axis=-1), 0, 255)


def _fractional_taps(taps: Sequence[tuple[float, float]]) -> dict[int, float]:
    """Weights on integer offsets from (offset, weight) taps at fractional offsets.

    Each tap is split between its two neighbouring integers (linear interpolation).
    """
    kernel: dict[int, float] = {}
    for offset, weight in taps:
        base = math.floor(offset)
        frac = offset - base
        kernel[base] = kernel.get(base, 0.0) + weight * (1.0 - frac)
        if frac > 0:
            kernel[base + 1] = kernel.get(base + 1, 0.0) + weight * frac
    return kernel


def _filter_1d(x: torch.Tensor, kernel: dict[int, float], dim: int) -> torch.Tensor:
    """out[i] = sum_o kernel[o] * x[clamp(i + o)] along ``dim`` (-1 or -2) of (C, H, W), edges replicated."""
    before, after = max(0, -min(kernel)), max(0, max(kernel))
    pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
    padded = F.pad(x.unsqueeze(0), pad, mode="replicate")[0]
    n = x.shape[dim]
    out = torch.zeros_like(x)
    for offset, weight in kernel.items():
        out.add_(padded.narrow(dim, before + offset, n), alpha=weight)
    return out


def chroma_prefilter(chroma: torch.Tensor, step_x: float, step_y: float) -> torch.Tensor:
    """Pre-filter source chroma (C, H, W) for 4:2:0 point sampling after a resample.

    H.264's default chroma siting ("left"): a chroma sample sits on even luma
    columns and halfway between luma rows 2j and 2j+1. The usual downsampling
    filter is [1, 2, 1] / 4 horizontally and [1, 1] / 2 vertically at the
    output's luma spacing; ``step_x``/``step_y`` are that spacing in source
    pixels, so sampling the result at output pixel (2i, 2j) gives the
    properly filtered, properly sited chroma value.
    """
    across = _fractional_taps(((-step_x, 0.25), (0.0, 0.5), (step_x, 0.25)))
    down = _fractional_taps(((0.0, 0.5), (step_y, 0.5)))
    return _filter_1d(_filter_1d(chroma, across, dim=-1), down, dim=-2)


def downsample_chroma_420(chroma: torch.Tensor) -> torch.Tensor:
    """(…, C, H, W) full-resolution chroma to (…, C, H/2, W/2), left-sited: [1,2,1]/4 across, [1,1]/2 down."""
    *lead, c, h, w = chroma.shape
    pairs = chroma.reshape(*lead, c, h // 2, 2, w).mean(dim=-2)
    flat = pairs.reshape(-1, 1, h // 2, w)
    padded = F.pad(flat, (1, 1, 0, 0), mode="replicate")
    out = 0.25 * padded[..., 0:w:2] + 0.5 * padded[..., 1 : w + 1 : 2] + 0.25 * padded[..., 2 : w + 2 : 2]
    return out.reshape(*lead, c, h // 2, w // 2)
