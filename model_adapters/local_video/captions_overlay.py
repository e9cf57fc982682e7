"""Burned-in captions: each cue laid out and drawn once (Pillow), precomposed as Y'CbCr planes,
and scheduled onto frames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from model_adapters.fonts import font_for
from model_adapters.local_video.colour import downsample_chroma_420, rgb_to_yuv709
from model_adapters.media.text_layout import text_width, wrap_words
from model_adapters.types import CaptionCue

CAPTION_FONT_SHARE = 0.06  # of the frame's short side (its height, unless portrait)
CAPTION_MAX_WIDTH = 0.88  # of the frame width
CAPTION_PANEL_ALPHA = 0.5
CAPTION_MAX_LINES = 3


@dataclass(frozen=True)
class CaptionLayout:
    """Where a cue's panel goes and how its text is set."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in the frame (even numbers; right/bottom exclusive)
    font_size: int
    lines: tuple[str, ...]


def _font(size: int, text: str = "") -> ImageFont.FreeTypeFont:
    return font_for(text, size, "Medium")  # a CJK font for text with kana or kanji


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
            wrapped.extend(wrap_words(line.split(), font, stroke, max_width))
        widest = max(text_width(font, line, stroke) for line in wrapped)
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

    def to(self, device: torch.device) -> CaptionOverlay:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        moved: dict[str, Any] = {k: v.to(device) for k, v in values.items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved)


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
