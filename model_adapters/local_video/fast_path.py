"""The fast CPU frame path: per frame, one uint8 antialiased ``F.interpolate`` crop-and-resample
of a packed Y'CbCr source.

See the package docstring (steps 1 to 3) for why it is built this way.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F

from model_adapters.local_video.camera import ZOOM_MAX, CameraPath
from model_adapters.local_video.captions_overlay import CaptionOverlay
from model_adapters.local_video.colour import chroma_prefilter, rgb_to_yuv709
from model_adapters.local_video.frames import OVERSAMPLE, plane_tensors, resize_rgb

MAX_PHASE_OFFSET = 12  # largest output offset m tried per axis
SOURCE_PAD = 24  # replicated border around the packed source, in source px
_LITTLE_ENDIAN = sys.byteorder == "little"


def _phase_plan(origin: np.ndarray, step: np.ndarray, out_len: int, src_len: int) -> tuple[np.ndarray, ...]:
    """Integer crop start k, output offset m and crop length L per frame, for one axis.

    ``F.interpolate(crop, scale_factor=1/step)`` maps output index j to source
    ``k + (j + 0.5) * step``; the frame wants output pixel i at
    ``origin + (i + 0.5) * step``. With j = m + i we need ``k + m * step = origin``:
    try m = 1..MAX_PHASE_OFFSET (m >= 1 keeps the filter support inside the crop)
    and keep the one whose rounding error is smallest. Returns (k, m, length, error).
    """
    m = np.arange(1, MAX_PHASE_OFFSET + 1, dtype=np.float64)[None, :]
    origin = origin[:, None]
    step = step[:, None]
    k = np.round(origin - m * step)
    length = np.ceil((m + out_len + 2) * step) + 2
    error = np.abs(origin - m * step - k)
    feasible = (k >= 0) & (k + length <= src_len)
    error = np.where(feasible, error, np.inf)
    best = np.argmin(error + m * 1e-9, axis=1)  # ties: the smallest m
    rows = np.arange(len(best))
    if not np.all(np.isfinite(error[rows, best])):
        raise RuntimeError("camera path leaves the padded source")  # SOURCE_PAD guards against this
    return (
        k[rows, best].astype(np.int64),
        m[0, best].astype(np.int64),
        length[rows, best].astype(np.int64),
        error[rows, best],
    )


def _blend_fixed(region: torch.Tensor, premult7: torch.Tensor, inv_alpha7: torch.Tensor) -> None:
    """region = (premult7 + region * inv_alpha7) >> 7, in int16 (max 255*128 + 64 < 2**15)."""
    mixed = region.to(torch.int16)
    mixed.mul_(inv_alpha7).add_(premult7).bitwise_right_shift_(7)
    region.copy_(mixed)


class _FastFrames:
    """Frames by the uint8 antialiased interpolate kernel (see the package docstring)."""

    name = "cpu-fast"

    def __init__(
        self,
        still_rgb: torch.Tensor,
        path: CameraPath,
        width: int,
        height: int,
        overlays: Sequence[CaptionOverlay],
        schedule: Sequence[int],
    ):
        self.width, self.height = width, height
        self.overlays = overlays
        self.schedule = schedule
        _, still_h, still_w = still_rgb.shape
        # Source density: OVERSAMPLE * ZOOM_MAX source px per output px at zoom 1, so the step
        # r = density / zoom stays in [OVERSAMPLE, OVERSAMPLE * ZOOM_MAX]: always a (mild) downscale
        # and frac(r) >= 0.1, which gives the phase plan enough distinct phases.
        density = OVERSAMPLE * ZOOM_MAX * path.cover_scale  # source px per still px
        src_w, src_h = max(2, round(still_w * density)), max(2, round(still_h * density))
        sx, sy = src_w / still_w, src_h / still_h
        source = resize_rgb(still_rgb, src_w, src_h)
        yuv = rgb_to_yuv709(source.float())
        step_mid = OVERSAMPLE * math.sqrt(ZOOM_MAX)
        yuv[1:] = chroma_prefilter(yuv[1:], step_mid * sx / density, step_mid * sy / density)
        yuv = F.pad(yuv.unsqueeze(0), (SOURCE_PAD,) * 4, mode="replicate")[0].round_().clamp_(0, 255)
        # Packed Y, Cb, Cr, 0 bytes per pixel: what the AVX2 uint8 kernel works on.
        packed = torch.zeros((1, yuv.shape[1], yuv.shape[2], 4), dtype=torch.uint8)
        packed[0, :, :, :3].copy_(yuv.permute(1, 2, 0))
        self.source = packed.permute(0, 3, 1, 2)  # (1, 4, H, W), channels-last in memory
        pad_w, pad_h = src_w + 2 * SOURCE_PAD, src_h + 2 * SOURCE_PAD

        step_x = sx / (path.cover_scale * path.zoom)  # source px per output px
        step_y = sy / (path.cover_scale * path.zoom)
        origin_x = sx * path.center_x - step_x * width / 2 + SOURCE_PAD
        origin_y = sy * path.center_y - step_y * height / 2 + SOURCE_PAD
        self.kx, self.mx, self.lx, err_x = _phase_plan(origin_x, step_x, width, pad_w)
        self.ky, self.my, self.ly, err_y = _phase_plan(origin_y, step_y, height, pad_h)
        self.step_x, self.step_y = step_x, step_y
        self.max_phase_error = float(max(err_x.max(initial=0), err_y.max(initial=0)))

    def __iter__(self) -> Iterator[av.VideoFrame]:
        w, h = self.width, self.height
        for i in range(len(self.kx)):
            kx, mx, lx = int(self.kx[i]), int(self.mx[i]), int(self.lx[i])
            ky, my, ly = int(self.ky[i]), int(self.my[i]), int(self.ly[i])
            # A contiguous crop: the uint8 kernel is ~4x slower on a strided view.
            crop = self.source[:, :, ky : ky + ly, kx : kx + lx].contiguous(memory_format=torch.channels_last)
            out = F.interpolate(
                crop,
                scale_factor=(1.0 / float(self.step_y[i]), 1.0 / float(self.step_x[i])),
                mode="bilinear",
                antialias=True,
                align_corners=False,
                recompute_scale_factor=False,
            )
            pixels = out[0].permute(1, 2, 0)  # (rows, cols, 4) bytes, contiguous
            hwc = pixels[my : my + h, mx : mx + w]
            frame = av.VideoFrame(w, h, "yuv420p")
            y, u, v = plane_tensors(frame)
            if _LITTLE_ENDIAN:
                # Y is the low byte of each 4-byte pixel: a narrowing int32 -> uint8 copy
                # (vectorised) is 4x faster than a strided byte copy.
                y.copy_(pixels.view(torch.int32)[my : my + h, mx : mx + w, 0])
            else:
                y.copy_(hwc[:, :, 0])
            u.copy_(hwc[0::2, 0::2, 1])  # chroma pre-filtered at the source: point-sample
            v.copy_(hwc[0::2, 0::2, 2])
            shown = self.schedule[i]
            if shown >= 0:
                ov = self.overlays[shown]
                left, top, right, bottom = ov.box
                _blend_fixed(y[top:bottom, left:right], ov.y_premult7, ov.y_inv_alpha7)
                cl, ct, cr, cb = left // 2, top // 2, right // 2, bottom // 2
                _blend_fixed(u[ct:cb, cl:cr], ov.c_premult7[0], ov.c_inv_alpha7)
                _blend_fixed(v[ct:cb, cl:cr], ov.c_premult7[1], ov.c_inv_alpha7)
            yield frame
