"""The local ``video`` adapter: a slow camera move over the refined still, captions, H.264 + AAC.

:class:`PyAVCompositor` turns a still (PNG) and a voiceover (WAV) into an MP4:

* video: H.264 (libx264), yuv420p, BT.709 limited range (tagged on the stream),
  ``request.width`` x ``request.height`` at ``request.fps``. The camera makes
  one slow Ken Burns move: an eased zoom between 1.0 and :data:`ZOOM_MAX` with a
  slight pan; whether it zooms in or out and which way it pans come from
  ``request.seed`` (:func:`camera_path`, deterministic).
* captions: each :class:`CaptionCue` is drawn once (Pillow's bundled scalable
  font, white with a dark outline on a translucent panel, in the bottom safe
  area) and blended into exactly the frames whose start time lies in
  ``[start_s, end_s)``.
* audio: the WAV resampled to 48 kHz stereo, padded with silence to the video's
  length, encoded with FFmpeg's native ``aac`` encoder.
* length: ``round((audio + tail_s) * fps)`` frames; the audio stream lasts as
  long as the video (never shorter than the voice), so the two differ by less
  than one frame.
* ``moov`` before ``mdat`` (``movflags=+faststart``; checked on the bytes, with
  a pure-Python relocation as the fallback).

Fast path (CPU). Per-frame Python/PIL resizing runs at ~1.4x real time at
720p30 on two cores; here the per-frame work is a handful of C++ kernels:

1. Once per call: the still is resized to ~1.19x the output's pixel density,
   converted to YUV (BT.709, limited range) and packed as a 4-channel uint8
   channels-last image; its chroma is pre-filtered with the 4:2:0 siting filter
   so that point-sampling it later equals a proper chroma downsample.
2. Per frame: one ``F.interpolate(uint8, bilinear, antialias=True)`` call (the
   AVX2 uint8 kernel, ~2 ms at 720p) does crop + resample of Y, U and V
   together. That kernel only crops at integer offsets, so sub-pixel camera
   positions are reached by choosing, per axis, an integer crop start and a
   small output offset ``m`` (``m * r`` has a different fractional part for
   each ``m``; :func:`_phase_plan`): positions are exact to < 0.1 px and the
   move is smooth, without the 1-px stepping of integer-crop zooms.
3. Y is copied and U/V point-sampled straight into the ``AVFrame`` planes
   (no swscale, no intermediate buffers); the caption, precomposed per cue as
   premultiplied int16 planes, is blended in place inside its box only.
4. Frames are made on a long-lived worker thread (single-threaded ATen, so it
   does not fight libx264's threads), audio is decoded and AAC-encoded on
   another, and the calling thread feeds x264 and muxes; x264, the torch
   kernels and the AAC encoder all release the GIL.

On CUDA (:func:`model_adapters.devices.pick_device`) the frames are made in
batches with ``grid_sample`` in float and downsampled to 4:2:0 on the GPU; the
same path runs on CPU with ``backend="grid"`` (a reference for tests).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import hashlib
import io
import math
import os
import queue
import random
import struct
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Iterator, Literal, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.devices import pick_device
from model_adapters.fonts import font_for
from model_adapters.media.mp4 import is_faststart, mp4_top_level_boxes  # noqa: F401  (re-exported: callers import them from here)
from model_adapters.types import AdapterError, AdapterInfo, CaptionCue, Price, VideoRequest, VideoResult

PROVIDER = "local"
MODEL = "pyav-kenburns"
ALGORITHM_VERSION = "1"

# Camera move.
ZOOM_MAX = 1.08
PAN_SHARE = 0.6  # of the room the zoom leaves at its tightest
PAN_LIMIT = 0.03  # of the frame, whatever the room: a slight pan

# Fast path geometry.
OVERSAMPLE = 1.10  # source px per output px at the tightest zoom; keeps frac(r) >= 0.1
MAX_PHASE_OFFSET = 12  # largest output offset m tried per axis
SOURCE_PAD = 24  # replicated border around the packed source, in source px

# Audio.
AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"  # a mono voice is duplicated, see decode_audio
AUDIO_BITRATE = 128_000
AAC_FRAME = 1024

# Colour: BT.709, limited ("tv") range. FFmpeg enum values (AVCOL_*).
KR, KB = 0.2126, 0.0722
AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709 = 1
AVCOL_RANGE_MPEG = 1

# Captions.
CAPTION_FONT_SHARE = 0.06  # of the frame's short side (its height, unless portrait)
CAPTION_MAX_WIDTH = 0.88  # of the frame width
CAPTION_PANEL_ALPHA = 0.5
CAPTION_MAX_LINES = 3

MIN_SIDE, MAX_SIDE = 16, 4096
_LITTLE_ENDIAN = sys.byteorder == "little"
MAX_FPS = 120
QUEUE_FRAMES = 12
GRID_BATCH = 16

Backend = Literal["auto", "fast", "grid"]


# --- camera path -----------------------------------------------------------------


@dataclass(frozen=True)
class CameraPath:
    """Per-frame zoom and viewport centre, in the still's pixel coordinates."""

    zoom: np.ndarray  # (n,) float64, 1.0 .. ZOOM_MAX
    center_x: np.ndarray  # (n,)
    center_y: np.ndarray  # (n,)
    cover_scale: float  # output px per still px at zoom 1 (cover fit)
    zoom_in: bool
    pan: tuple[float, float]  # unit direction of the pan (x right, y down)


def ease(t: np.ndarray) -> np.ndarray:
    """Cosine ease-in-out on [0, 1]: zero velocity at both ends."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def camera_path(n_frames: int, still_size: tuple[int, int], out_size: tuple[int, int], seed: int) -> CameraPath:
    """The Ken Burns move: eased zoom 1.0 <-> ZOOM_MAX plus a slight pan, chosen by ``seed``.

    The viewport always stays inside the still: the pan at progress ``e`` is
    ``e`` times its final offset, and the room the zoom leaves is a concave
    function of ``e`` that starts at the cover-fit slack, so a final offset
    within the room at ``ZOOM_MAX`` is within the room at every ``e``.
    """
    still_w, still_h = still_size
    out_w, out_h = out_size
    cover = max(out_w / still_w, out_h / still_h)
    rng = random.Random(f"kenburns:{seed}")
    zoom_in = rng.random() < 0.5
    angle = rng.randrange(8) * math.pi / 4
    direction = (round(math.cos(angle), 6) + 0.0, round(math.sin(angle), 6) + 0.0)  # + 0.0: no -0.0

    # Final pan offset (still px): a share of the room at the tightest zoom, capped.
    room_x = (still_w - out_w / (cover * ZOOM_MAX)) / 2
    room_y = (still_h - out_h / (cover * ZOOM_MAX)) / 2
    pan_x = direction[0] * min(PAN_SHARE * room_x, PAN_LIMIT * out_w / cover)
    pan_y = direction[1] * min(PAN_SHARE * room_y, PAN_LIMIT * out_h / cover)

    t = np.arange(n_frames, dtype=np.float64) / max(n_frames - 1, 1)
    e = ease(t)
    if not zoom_in:
        e = 1.0 - e
    zoom = 1.0 + (ZOOM_MAX - 1.0) * e
    return CameraPath(
        zoom=zoom,
        center_x=still_w / 2 + pan_x * e,
        center_y=still_h / 2 + pan_y * e,
        cover_scale=cover,
        zoom_in=zoom_in,
        pan=direction,
    )


# --- colour ----------------------------------------------------------------------


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


def _chroma_prefilter(chroma: torch.Tensor, step_x: float, step_y: float) -> torch.Tensor:
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


# --- captions ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionLayout:
    """Where a cue's panel goes and how its text is set."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in the frame (even numbers; right/bottom exclusive)
    font_size: int
    lines: tuple[str, ...]


def _font(size: int, text: str = "") -> ImageFont.FreeTypeFont:
    return font_for(text, size, "Medium")  # a CJK font for text with kana or kanji


def _text_width(font, text: str, stroke: int) -> float:
    left, _, right, _ = font.getbbox(text, stroke_width=stroke)
    return right - left


def _wrap(words: list[str], font, stroke: int, max_width: float) -> list[str]:
    """Greedy word wrap; a word wider than the line (Japanese has no spaces) is broken between
    characters."""
    lines: list[str] = []
    current = ""
    pieces: list[str] = []
    for word in words:
        if _text_width(font, word, stroke) <= max_width:
            pieces.append(word)
            continue
        piece = ""
        for ch in word:
            if piece and _text_width(font, piece + ch, stroke) > max_width:
                pieces.append(piece)
                piece = ch
            else:
                piece += ch
        pieces.append(piece)
    for word in pieces:
        trial = f"{current} {word}" if current else word
        if current and _text_width(font, trial, stroke) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def caption_font_size(width: int, height: int) -> int:
    return max(10, round(CAPTION_FONT_SHARE * min(width, height)))


def layout_caption(lines: Sequence[str], width: int, height: int) -> CaptionLayout | None:
    """Word-wrap a cue's lines into the bottom safe area; shrink the font only if it must."""
    text_lines = [" ".join(line.split()) for line in lines]
    text_lines = [line for line in text_lines if line]
    if not text_lines:
        return None
    max_width = CAPTION_MAX_WIDTH * width
    size = caption_font_size(width, height)
    min_size = max(8, size // 2)
    while True:
        font = _font(size, " ".join(text_lines))
        stroke = max(1, round(size * 0.08))
        wrapped: list[str] = []
        for line in text_lines:
            wrapped.extend(_wrap(line.split(), font, stroke, max_width))
        widest = max(_text_width(font, line, stroke) for line in wrapped)
        if (widest <= max_width and len(wrapped) <= max(CAPTION_MAX_LINES, len(text_lines))) or size <= min_size:
            break
        size = max(min_size, int(size * 0.9))
    line_height = round(size * 1.25)
    pad_x, pad_y = round(size * 0.45), round(size * 0.3)
    panel_w = min(width, math.ceil(widest) + 2 * pad_x)
    panel_h = min(height, line_height * len(wrapped) + 2 * pad_y)
    portrait = height > width * 1.2
    bottom_margin = round(height * (0.14 if portrait else 0.07))  # clear of the platforms' bottom UI
    bottom = max(panel_h, height - bottom_margin)
    left = (width - panel_w) // 2
    top = bottom - panel_h
    left, top = left - left % 2, top - top % 2
    right = min(width, left + panel_w + panel_w % 2)
    bottom = min(height, top + panel_h + panel_h % 2)
    return CaptionLayout(box=(left, top, right, bottom), font_size=size, lines=tuple(wrapped))


def render_caption(layout: CaptionLayout) -> Image.Image:
    """The cue's panel as an RGBA image the size of ``layout.box``."""
    left, top, right, bottom = layout.box
    w, h = right - left, bottom - top
    size = layout.font_size
    font = _font(size, " ".join(layout.lines))
    stroke = max(1, round(size * 0.08))
    panel = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(panel).rounded_rectangle(
        (0, 0, w - 1, h - 1), radius=round(size * 0.3), fill=(0, 0, 0, round(255 * CAPTION_PANEL_ALPHA))
    )
    text = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(text)
    line_height = round(size * 1.25)
    y = (h - line_height * len(layout.lines)) / 2 + line_height / 2
    for line in layout.lines:
        draw.text(
            (w / 2, y),
            line,
            font=font,
            fill=(255, 255, 255, 255),
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=(16, 16, 16, 255),
        )
        y += line_height
    return Image.alpha_composite(panel, text)


@dataclass(frozen=True)
class CaptionOverlay:
    """One cue, precomposed: premultiplied Y'CbCr and alpha at luma and at chroma resolution."""

    start_s: float
    end_s: float
    box: tuple[int, int, int, int]  # in the frame; even coordinates
    y_premult: torch.Tensor  # (h, w) float: Y * alpha
    y_alpha: torch.Tensor  # (h, w) float 0..1
    c_premult: torch.Tensor  # (2, h/2, w/2) float: Cb*alpha, Cr*alpha (chroma resolution)
    c_alpha: torch.Tensor  # (h/2, w/2)
    # Fixed point for the CPU path, int16: out = (premult7 + x * inv_alpha7) >> 7,
    # premult7 = round(value * alpha7) + 64 (rounding), alpha7 = round(alpha * 128).
    y_premult7: torch.Tensor = field(repr=False)
    y_inv_alpha7: torch.Tensor = field(repr=False)
    c_premult7: torch.Tensor = field(repr=False)  # (2, h/2, w/2)
    c_inv_alpha7: torch.Tensor = field(repr=False)

    def to(self, device: torch.device) -> "CaptionOverlay":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in values.items() if isinstance(v, torch.Tensor)})


def build_overlay(cue: CaptionCue, width: int, height: int) -> CaptionOverlay | None:
    layout = layout_caption(cue.lines, width, height)
    if layout is None or cue.end_s <= cue.start_s:
        return None
    rgba = torch.from_numpy(np.array(render_caption(layout), dtype=np.float32)).permute(2, 0, 1).contiguous()
    alpha = rgba[3] / 255.0
    yuv = rgb_to_yuv709(rgba[:3])
    premult = yuv * alpha
    c_premult = downsample_chroma_420(premult[1:])
    c_alpha = downsample_chroma_420(alpha[None])[0]
    y_alpha7 = torch.round(alpha * 128).to(torch.int16)
    c_alpha7 = torch.round(c_alpha * 128).to(torch.int16)
    # Premultiplied in the same fixed point; + 64 rounds the final >> 7.
    y_pm7 = (torch.round(yuv[0] * y_alpha7.float()) + 64).to(torch.int16)
    c_color = c_premult / c_alpha.clamp(min=1e-6)
    c_pm7 = (torch.round(c_color * c_alpha7.float()) + 64).to(torch.int16)
    return CaptionOverlay(
        start_s=cue.start_s,
        end_s=cue.end_s,
        box=layout.box,
        y_premult=premult[0].contiguous(),
        y_alpha=alpha.contiguous(),
        c_premult=c_premult.contiguous(),
        c_alpha=c_alpha.contiguous(),
        y_premult7=y_pm7.contiguous(),
        y_inv_alpha7=(128 - y_alpha7).contiguous(),
        c_premult7=c_pm7.contiguous(),
        c_inv_alpha7=(128 - c_alpha7).contiguous(),
    )


def cue_schedule(overlays: Sequence[CaptionOverlay], n_frames: int, fps: int) -> list[int]:
    """For each frame, the index of the overlay shown (-1: none). A frame at t = i / fps shows a
    cue when start <= t < end; where cues overlap, the one that started last wins."""
    shown = [-1] * n_frames
    for index, overlay in sorted(enumerate(overlays), key=lambda item: item[1].start_s):
        first = max(0, math.ceil(overlay.start_s * fps - 1e-9))
        last = min(n_frames, math.ceil(overlay.end_s * fps - 1e-9))  # exclusive: i / fps < end
        for i in range(first, last):
            shown[i] = index
    return shown


# --- fast CPU path -----------------------------------------------------------------


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


def _plane_tensors(frame: av.VideoFrame) -> list[torch.Tensor]:
    """Writable (height, width) uint8 views of a frame's planes (no copy)."""
    views = []
    for plane in frame.planes:
        array = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        views.append(torch.from_numpy(array))
    return views


def _blend_fixed(region: torch.Tensor, premult7: torch.Tensor, inv_alpha7: torch.Tensor) -> None:
    """region = (premult7 + region * inv_alpha7) >> 7, in int16 (max 255*128 + 64 < 2**15)."""
    mixed = region.to(torch.int16)
    mixed.mul_(inv_alpha7).add_(premult7).bitwise_right_shift_(7)
    region.copy_(mixed)


class _FastFrames:
    """Frames by the uint8 antialiased interpolate kernel (see the module docstring)."""

    name = "cpu-fast"

    def __init__(self, still_rgb: torch.Tensor, path: CameraPath, width: int, height: int, overlays, schedule):
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
        source = _resize_rgb(still_rgb, src_w, src_h)
        yuv = rgb_to_yuv709(source.float())
        step_mid = OVERSAMPLE * math.sqrt(ZOOM_MAX)
        yuv[1:] = _chroma_prefilter(yuv[1:], step_mid * sx / density, step_mid * sy / density)
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
            y, u, v = _plane_tensors(frame)
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


def _resize_rgb(rgb: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (3, H, W) to uint8 (3, height, width): bicubic, antialiased when shrinking."""
    if rgb.shape[1:] == (height, width):
        return rgb
    x = rgb.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out[0].contiguous()


# --- grid path (GPU, or CPU as a reference) -------------------------------------------


class _GridFrames:
    """Frames by float ``grid_sample`` in batches; 4:2:0 downsampling and captions on the device."""

    def __init__(self, still_rgb: torch.Tensor, path: CameraPath, width: int, height: int, overlays, schedule, device):
        self.name = f"{device.type}-grid"
        self.device = device
        self.width, self.height = width, height
        self.schedule = schedule
        self.overlays = [ov.to(device) for ov in overlays]
        _, still_h, still_w = still_rgb.shape
        density = OVERSAMPLE * ZOOM_MAX * path.cover_scale
        src_w, src_h = max(2, round(still_w * density)), max(2, round(still_h * density))
        sx, sy = src_w / still_w, src_h / still_h
        source = _resize_rgb(still_rgb, src_w, src_h).to(device)
        self.source = rgb_to_yuv709(source.float()).unsqueeze(0)  # (1, 3, H, W)
        step_x = sx / (path.cover_scale * path.zoom)
        step_y = sy / (path.cover_scale * path.zoom)
        origin_x = sx * path.center_x - step_x * width / 2
        origin_y = sy * path.center_y - step_y * height / 2
        # Output pixel centre i -> source x = origin + (i + 0.5) * step; in grid_sample's
        # normalised coordinates (align_corners=False): x_n = 2 x / src_w - 1.
        theta = np.zeros((len(step_x), 2, 3), dtype=np.float64)
        theta[:, 0, 0] = width * step_x / src_w
        theta[:, 0, 2] = (2 * origin_x + width * step_x) / src_w - 1
        theta[:, 1, 1] = height * step_y / src_h
        theta[:, 1, 2] = (2 * origin_y + height * step_y) / src_h - 1
        self.theta = torch.from_numpy(theta).float().to(device)

    def __iter__(self) -> Iterator[av.VideoFrame]:
        w, h = self.width, self.height
        n = self.theta.shape[0]
        with torch.inference_mode():
            for start in range(0, n, GRID_BATCH):
                stop = min(n, start + GRID_BATCH)
                theta = self.theta[start:stop]
                b = stop - start
                grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
                frames = F.grid_sample(
                    self.source.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
                )
                luma = frames[:, 0]
                chroma = downsample_chroma_420(frames[:, 1:])
                for j in range(b):
                    shown = self.schedule[start + j]
                    if shown >= 0:
                        ov = self.overlays[shown]
                        left, top, right, bottom = ov.box
                        region = luma[j, top:bottom, left:right]
                        region.mul_(1 - ov.y_alpha).add_(ov.y_premult)
                        creg = chroma[j, :, top // 2 : bottom // 2, left // 2 : right // 2]
                        creg.mul_(1 - ov.c_alpha).add_(ov.c_premult)
                luma8 = luma.round_().clamp_(0, 255).to(torch.uint8).cpu()
                chroma8 = chroma.round_().clamp_(0, 255).to(torch.uint8).cpu()
                for j in range(b):
                    frame = av.VideoFrame(w, h, "yuv420p")
                    y, u, v = _plane_tensors(frame)
                    y.copy_(luma8[j])
                    u.copy_(chroma8[j, 0])
                    v.copy_(chroma8[j, 1])
                    yield frame


# --- audio -----------------------------------------------------------------------------


def decode_audio(wav: bytes) -> tuple[np.ndarray, int, float]:
    """WAV (or anything FFmpeg reads) to float32 (2, samples) at AUDIO_RATE, plus the input's
    sample rate and exact duration.

    A mono voice goes to both channels at its own level (swresample's mono -> stereo
    matrix would lower it by 3 dB and undo the voice stage's loudness normalisation);
    stereo stays stereo; more channels are downmixed by swresample.
    """
    try:
        with av.open(io.BytesIO(wav), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            in_rate = stream.codec_context.sample_rate
            mono = stream.codec_context.channels == 1
            resampler = av.AudioResampler(format="fltp", layout="mono" if mono else "stereo", rate=AUDIO_RATE)
            chunks: list[np.ndarray] = []
            in_samples = 0
            for frame in container.decode(stream):
                in_samples += frame.samples
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"voiceover is not readable audio: {exc}") from exc
    if in_samples == 0 or not in_rate:
        raise ValueError("voiceover has no samples")
    pcm = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if pcm.shape[0] == 1:
        pcm = np.repeat(pcm, 2, axis=0)
    return pcm, in_rate, in_samples / in_rate


def voice_duration(wav: bytes) -> float:
    """The voiceover's length in seconds, from the WAV header when it is PCM WAV (no decoding),
    else by decoding it."""
    try:
        with wave.open(io.BytesIO(wav)) as handle:
            if handle.getnframes() > 0 and handle.getframerate() > 0:
                return handle.getnframes() / handle.getframerate()
    except (wave.Error, EOFError):
        pass
    return decode_audio(wav)[2]


def _audio_frames(pcm: np.ndarray, total_samples: int) -> Iterator[av.AudioFrame]:
    """AAC-sized frames of ``pcm`` padded with silence (or trimmed) to ``total_samples``."""
    channels = pcm.shape[0]
    if pcm.shape[1] < total_samples:
        pcm = np.concatenate([pcm, np.zeros((channels, total_samples - pcm.shape[1]), np.float32)], axis=1)
    pcm = pcm[:, :total_samples]
    for start in range(0, total_samples, AAC_FRAME):
        chunk = np.ascontiguousarray(pcm[:, start : start + AAC_FRAME])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=AUDIO_LAYOUT)
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame


# --- MP4 boxes ----------------------------------------------------------------------------


_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"udta"}


def _shift_chunk_offsets(box: bytearray, start: int, end: int, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry inside box[start:end] (the children of a container)."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", box, offset)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", box, offset + 8)[0]
            header = 16
        if size < header or offset + size > end:
            raise ValueError(f"malformed MP4 box {kind!r}")
        if kind in _CONTAINER_BOXES:
            _shift_chunk_offsets(box, offset + header, offset + size, delta)
        elif kind == b"stco":
            count = struct.unpack_from(">I", box, offset + header + 4)[0]
            for n in range(count):
                at = offset + header + 8 + 4 * n
                value = struct.unpack_from(">I", box, at)[0] + delta
                if value >= 2**32:
                    raise ValueError("chunk offset overflows stco; cannot relocate moov")
                struct.pack_into(">I", box, at, value)
        elif kind == b"co64":
            count = struct.unpack_from(">I", box, offset + header + 4)[0]
            for n in range(count):
                at = offset + header + 8 + 8 * n
                struct.pack_into(">Q", box, at, struct.unpack_from(">Q", box, at)[0] + delta)
        offset += size


def move_moov_to_front(data: bytes) -> bytes:
    """What ``movflags=+faststart`` does, in Python: moov before the first mdat, chunk offsets patched."""
    boxes = mp4_top_level_boxes(data)
    kinds = [kind for kind, _, _ in boxes]
    if "moov" not in kinds or "mdat" not in kinds:
        raise ValueError("not an MP4 with moov and mdat")
    moov_index, mdat_index = kinds.index("moov"), kinds.index("mdat")
    if moov_index < mdat_index:
        return data
    _, moov_offset, moov_size = boxes[moov_index]
    moov = bytearray(data[moov_offset : moov_offset + moov_size])
    header = 16 if struct.unpack_from(">I", moov, 0)[0] == 1 else 8
    _shift_chunk_offsets(moov, header, len(moov), moov_size)
    insert_at = boxes[mdat_index][1]
    return data[:insert_at] + bytes(moov) + data[insert_at:moov_offset] + data[moov_offset + moov_size :]


# --- probing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamFacts:
    video_duration_s: float
    audio_duration_s: float
    duration_s: float
    video_frames: int


def probe_mp4(path_or_bytes: str | bytes) -> StreamFacts:
    """Stream durations as the container declares them (what players and the tests read)."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with av.open(source) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        v_dur = float(v.duration * v.time_base) if v.duration else 0.0
        a_dur = float(a.duration * a.time_base) if a.duration else 0.0
        total = container.duration / av.time_base if container.duration else max(v_dur, a_dur)
        return StreamFacts(v_dur, a_dur, total, v.frames)


# --- the adapter ----------------------------------------------------------------------------------


_DONE = object()

FRAME_WORKERS = 4  # composes that can prepare frames at once; more wait for a free worker
_frame_pool: ThreadPoolExecutor | None = None
_frame_pool_lock = threading.Lock()


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (Linux), to set one thread's team size."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libgomp" in path or "/libiomp" in path:
                    return ctypes.CDLL(path)
    except OSError:
        pass
    return None


def _single_threaded_torch_here() -> None:
    """Make ATen ops issued from the calling thread run on that thread alone.

    Frame preparation runs beside libx264's own threads; an OpenMP team of its
    own would only contend with the encoder (and its idle workers spin). The
    team size is an OpenMP per-thread setting, so this leaves every other
    thread alone (``torch.set_num_threads`` would also change the default of
    threads started later). ATen initialises a thread's setting lazily on its
    first use, which would undo ours, hence the call to ``get_num_threads`` first.
    """
    torch.get_num_threads()
    runtime = _openmp_runtime()
    if runtime is not None:
        runtime.omp_set_num_threads(1)


def _frame_workers() -> ThreadPoolExecutor:
    """Long-lived frame-preparation threads (made on first use, never at import).

    Long-lived because every new thread that runs ATen ops gets its own OpenMP
    state; short-lived producer threads per call were measured to slow each
    later call down.
    """
    global _frame_pool
    with _frame_pool_lock:
        if _frame_pool is None:
            _frame_pool = ThreadPoolExecutor(
                max_workers=FRAME_WORKERS, thread_name_prefix="video-frames", initializer=_single_threaded_torch_here
            )
        return _frame_pool


def decode_still(png: bytes) -> torch.Tensor:
    """PNG (or any image Pillow reads) to uint8 RGB (3, H, W)."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"still is not a readable image: {exc}") from exc
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class PyAVCompositor:
    """Local ``video`` adapter: Ken Burns move over the still, burned-in captions, H.264 + AAC MP4."""

    def __init__(
        self,
        adapter_id: str = "local-pyav",
        max_concurrency: int = 1,
        preset: str = "veryfast",
        crf: int = 23,
        threads: int = 0,
        backend: Backend = "auto",
        audio_bitrate: int = AUDIO_BITRATE,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {crf}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: libx264 decides), got {threads}")
        if backend not in ("auto", "fast", "grid"):
            raise ValueError(f"backend must be 'auto', 'fast' or 'grid', got {backend!r}")
        self.preset, self.crf, self.threads, self.backend = preset, crf, threads, backend
        self.audio_bitrate = audio_bitrate
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="video",
            provider=PROVIDER,
            model=MODEL,
            model_version=f"{ALGORITHM_VERSION}+ffmpeg{av.ffmpeg_version_info}+x264-{preset}-crf{crf}",
            price=Price(per_output_second=0.0),
            capabilities=frozenset({"h264", "aac", "captions", "ken-burns", "faststart"}),
            max_concurrency=max_concurrency,
        )
        self._semaphores = PerLoopSemaphores(max_concurrency)

    async def compose(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> VideoResult:
        # The x264 encode runs on the CPU whatever device makes the frames.
        async with self._semaphores.get(), COMPUTE_SLOTS.hold("cpu", "local-video"):
            return await asyncio.to_thread(self.compose_sync, request, image_png, audio_wav)

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own codecs and files."""

    # -- blocking work --------------------------------------------------------------------

    def compose_sync(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> VideoResult:
        """The whole job, blocking: what :meth:`compose` runs in a worker thread."""
        started = time.perf_counter()
        _validate(request, image_png, audio_wav)
        audio_s = voice_duration(audio_wav)
        fps = request.fps
        n_frames = max(1, round((audio_s + request.tail_s) * fps))
        video_s = n_frames / fps
        # The audio lasts as long as the video, and never cuts the voice.
        audio_samples = max(round(video_s * AUDIO_RATE), round(audio_s * AUDIO_RATE))
        device = self._device()

        with tempfile.TemporaryDirectory(prefix="campaign-video-") as folder:
            path = os.path.join(folder, "video.mp4")
            stats = self._encode(path, request, image_png, audio_wav, audio_samples, n_frames, device)
            with open(path, "rb") as handle:
                data = handle.read()
        faststart = "movflags"
        if not is_faststart(data):  # never seen with FFmpeg's mov muxer; kept as a guarantee
            data = move_moov_to_front(data)
            faststart = "python"
        facts = probe_mp4(data)
        if facts.video_frames not in (0, n_frames):
            raise AdapterError(f"the MP4 holds {facts.video_frames} frames, expected {n_frames}", provider=PROVIDER)
        elapsed = time.perf_counter() - started
        return VideoResult(
            mp4=data,
            width=request.width,
            height=request.height,
            fps=fps,
            duration_s=facts.duration_s,
            video_duration_s=facts.video_duration_s,
            audio_duration_s=facts.audio_duration_s,
            extras={
                "frames": n_frames,
                "encode_s": round(elapsed, 4),
                "realtime_factor": round(video_s / elapsed, 3) if elapsed > 0 else None,
                "backend": stats["backend"],
                "voice_duration_s": round(audio_s, 6),
                "input_sample_rate": stats["input_sample_rate"],
                "audio_sample_rate": AUDIO_RATE,
                "zoom": "in" if stats["zoom_in"] else "out",
                "pan": list(stats["pan"]),
                "frames_with_caption": stats["frames_with_caption"],
                "faststart": faststart,
                "max_phase_error_px": stats["max_phase_error"],
                "bytes": len(data),
            },
        )

    def _device(self) -> torch.device:
        return torch.device("cpu") if self.backend == "fast" else pick_device()

    def _frame_source(self, still: torch.Tensor, request: VideoRequest, n_frames: int, device: torch.device):
        path = camera_path(n_frames, (still.shape[2], still.shape[1]), (request.width, request.height), request.seed)
        overlays = [ov for ov in (build_overlay(cue, request.width, request.height) for cue in request.cues) if ov is not None]
        schedule = cue_schedule(overlays, n_frames, request.fps)
        # auto: the uint8 kernel on CPU, grid_sample batches on an accelerator.
        use_grid = self.backend == "grid" or (self.backend == "auto" and device.type != "cpu")
        if use_grid:
            frames = _GridFrames(still, path, request.width, request.height, overlays, schedule, device)
        else:
            frames = _FastFrames(still, path, request.width, request.height, overlays, schedule)
        return frames, path, schedule

    def _encode(self, path, request, image_png, audio_wav, audio_samples, n_frames, device) -> dict:
        """Frames from a worker thread, audio decoded and encoded here in step with them, muxed here."""
        fps = request.fps
        stats: dict = {}
        frames_q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    frames_q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                still = decode_still(image_png)
                frames, camera, schedule = self._frame_source(still, request, n_frames, device)
                stats.update(
                    backend=frames.name,
                    zoom_in=camera.zoom_in,
                    pan=camera.pan,
                    frames_with_caption=sum(1 for s in schedule if s >= 0),
                    max_phase_error=getattr(frames, "max_phase_error", None),
                )
                for frame in frames:
                    if not put(frame):
                        return
                put(_DONE)
            except BaseException as exc:  # handed to the encoding thread
                put(exc)

        producer = _frame_workers().submit(produce)
        audio_thread: threading.Thread | None = None
        try:
            with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
                video = container.add_stream("libx264", rate=fps)
                video.width, video.height, video.pix_fmt = request.width, request.height, "yuv420p"
                frame_time_base = Fraction(1, fps)
                video.time_base = frame_time_base
                cc = video.codec_context
                cc.thread_count = self.threads
                cc.color_primaries, cc.color_trc, cc.colorspace = AVCOL_PRI_BT709, AVCOL_TRC_BT709, AVCOL_SPC_BT709
                cc.color_range = AVCOL_RANGE_MPEG
                video.options = {"preset": self.preset, "crf": str(self.crf)}
                audio = container.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT)
                audio.bit_rate = self.audio_bitrate
                # Opened here, so the muxer (started by the first mux, in this thread) finds it
                # open and only reads its parameters while the audio thread encodes.
                audio.codec_context.open()
                audio_packets: collections.deque = collections.deque()
                audio_error: list[BaseException] = []

                def encode_audio() -> None:
                    # Decoding, resampling and AAC run beside the video (the encoder's
                    # own thread is on the critical path); packets are muxed by this thread.
                    try:
                        pcm, stats["input_sample_rate"], _ = decode_audio(audio_wav)
                        for frame in _audio_frames(pcm, audio_samples):
                            audio_packets.extend(audio.encode(frame))
                        audio_packets.extend(audio.encode(None))
                    except BaseException as exc:
                        audio_error.append(exc)

                audio_thread = threading.Thread(target=encode_audio, name="video-audio", daemon=True)
                audio_thread.start()

                count = 0
                while True:
                    item = frames_q.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    item.pts = count
                    item.time_base = frame_time_base  # the stream's own changes when the muxer starts
                    item.color_range, item.colorspace = AVCOL_RANGE_MPEG, AVCOL_SPC_BT709
                    for packet in video.encode(item):
                        container.mux(packet)
                    count += 1
                    # Interleave the audio made so far, up to the picture just sent.
                    while audio_packets and audio_packets[0].pts * fps <= count * AUDIO_RATE:
                        container.mux(audio_packets.popleft())
                for packet in video.encode(None):
                    container.mux(packet)
                audio_thread.join()
                if audio_error:
                    raise audio_error[0]
                while audio_packets:
                    container.mux(audio_packets.popleft())
                if count != n_frames:
                    raise AdapterError(f"made {count} frames, expected {n_frames}", provider=PROVIDER)
        finally:
            stop.set()
            if audio_thread is not None:
                audio_thread.join()
            producer.result()
        return stats


def _validate(request: VideoRequest, image_png: bytes, audio_wav: bytes) -> None:
    for name, value in (("width", request.width), ("height", request.height)):
        if value % 2 or not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(f"video {name} must be even and in [{MIN_SIDE}, {MAX_SIDE}], got {value}")
    if not 1 <= request.fps <= MAX_FPS:
        raise ValueError(f"fps must be in [1, {MAX_FPS}], got {request.fps}")
    if request.tail_s < 0:
        raise ValueError(f"tail_s must be >= 0, got {request.tail_s}")
    for name, data, expected in (("image", image_png, request.image_sha256), ("audio", audio_wav, request.audio_sha256)):
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ValueError(f"{name} bytes have sha256 {actual[:12]}…, the request names {expected[:12]}…")
