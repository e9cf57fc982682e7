"""The local ``refine`` adapter: upscale, grade toward the brand palette, sharpen, set the headline.

Steps, all deterministic (equal inputs give equal PNG bytes):

1. Validate: the bytes' sha256 must equal ``request.source_sha256`` and they
   must decode as a PNG (ValueError otherwise, with what was wrong).
2. Crop the source to the exact aspect ratio of ``request.aspect_ratio``
   (centred; a no-op for drafts made at that ratio) and upscale with torch
   bicubic interpolation (``antialias=True``, the PIL-like kernel) to
   :func:`target_size`: short side at least ``request.min_short_side``, the
   exact ratio, even sides (9:16 -> 1080x1920, 1:1 -> 1080x1080, 16:9 -> 1920x1080
   for 1080). A source larger than that is never downscaled.
3. Grade: in CIE Lab each colour moves ``GRADE_STRENGTH`` of the way toward
   its softly weighted nearest palette colour (lightness by half as much, so
   the picture keeps its tonal structure), applied through a 33^3 3D LUT.
4. Sharpen with an unsharp mask (Gaussian blur, reflect padding).
5. Set the headline with Pillow's bundled scalable font
   (Roboto from the ``font-roboto`` package, see model_adapters/fonts.py) inside
   the aspect ratio's safe box (:func:`safe_box`): word-wrapped, the largest
   size that fits, on a translucent rounded panel with a soft shadow, in the
   palette colour (or white/black) with the best contrast. :func:`layout_headline`
   is the pure function that decides where it goes; every pixel the headline
   changes lies inside its ``panel_box``, which lies inside the safe box.

``request.seed`` does not change the output: refinement has no randomness.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.devices import pick_device
from model_adapters.fonts import font_for
from model_adapters.media.aspect import ratio_sides
from model_adapters.media.text_layout import wrap_words
from model_adapters.palette import (
    RGB,
    contrast_ratio,
    lab_to_rgb,
    parse_palette,
    pick_text_color,
    relative_luminance,
    rgb_to_lab,
    soft_nearest_palette,
)
from model_adapters.types import AdapterInfo, ImageResult, Price, RefineRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL.Image import Image as PILImage
    from PIL.ImageFont import FreeTypeFont

ALGORITHM_VERSION = "1"
MODEL_NAME = "torch-refiner"

GRADE_STRENGTH = 0.3
GRADE_TEMPERATURE = 12.0  # Lab distance scale of the soft nearest-colour weights
SHARPEN_AMOUNT = 0.6
SHARPEN_SIGMA = 1.2  # pixels of the output image
MAX_SOURCE_SIDE = 8192
MAX_OUTPUT_PIXELS = 7680 * 4320  # 8K UHD
LUT_SIZE = 33
PNG_COMPRESS_LEVEL = 1  # zlib level: ~5x faster than 6 for ~13% larger files

Box = tuple[int, int, int, int]  # (left, top, right, bottom); right and bottom exclusive, as in PIL
Align = Literal["left", "center"]

# Safe boxes as fractions of the frame: (left, top, right, bottom, horizontal align, vertical align).
_SAFE: dict[str, tuple[float, float, float, float, Align, str]] = {
    # Vertical (stories, reels): the upper third, wide side margins, clear of the top UI.
    "9:16": (0.08, 0.10, 0.92, 0.36, "center", "top"),
    # Square: centred in the lower third.
    "1:1": (0.10, 0.64, 0.90, 0.92, "center", "middle"),
    # Landscape: a left-aligned block on the left 60%.
    "16:9": (0.06, 0.14, 0.60, 0.86, "left", "middle"),
}


# --- sizes --------------------------------------------------------------------------------


def target_size(aspect_ratio: str, min_short_side: int, source_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) with exactly ``aspect_ratio``, even sides, short side >= ``min_short_side``.

    With ``source_size`` the short side is also at least the source's (after
    cropping to the ratio), so a large source is never downscaled.
    """
    a, b = ratio_sides(aspect_ratio)
    if min_short_side <= 0:
        raise ValueError(f"min_short_side must be positive, got {min_short_side}")
    wanted = min_short_side
    if source_size is not None:
        cw, ch = _crop_size(source_size, a, b)
        wanted = max(wanted, min(cw, ch))
    k = math.ceil(wanted / min(a, b))
    k += k % 2  # even sides (H.264 and most encoders need them)
    return a * k, b * k


def _crop_size(size: tuple[int, int], a: int, b: int) -> tuple[int, int]:
    """Largest (w, h) inside ``size`` with w:h as close to a:b as whole pixels allow."""
    w, h = size
    if w * b > h * a:  # too wide
        return max(1, round(h * a / b)), h
    return w, max(1, round(w * b / a))


# --- headline layout ----------------------------------------------------------------------------


def safe_box(aspect_ratio: str, width: int, height: int) -> Box:
    """Where headline type may go, in pixels: (left, top, right, bottom), right/bottom exclusive."""
    if aspect_ratio not in _SAFE:
        ratio_sides(aspect_ratio)  # raises the clear error
    left, top, right, bottom, _, _ = _SAFE[aspect_ratio]
    return (round(left * width), round(top * height), round(right * width), round(bottom * height))


@dataclass(frozen=True)
class HeadlineLayout:
    """Where and how the headline is set. Boxes are (left, top, right, bottom), exclusive ends.

    ``text_box`` bounds the ink of every line (stroke included); ``panel_box``
    is the translucent panel around it, which also bounds the shadow. Both lie
    inside ``safe_box``. With an empty headline ``lines`` is empty and the
    boxes are None.
    """

    aspect_ratio: str
    width: int
    height: int
    safe_box: Box
    lines: tuple[str, ...]
    font_size: int
    stroke_width: int
    line_height: int
    align: Align
    line_origins: tuple[tuple[int, int], ...]  # anchor "la": left edge, ascender line
    text_box: Box | None
    panel_box: Box | None
    truncated: bool = False


def _font(size: int, text: str = "") -> FreeTypeFont:
    return font_for(text, size, "Bold")  # a CJK font for text with kana or kanji


def _ink_bbox(font: FreeTypeFont, text: str, stroke: int) -> Box:
    """The ink box of ``text`` at anchor "la". Pillow types it as floats (a fractional stroke
    makes it fractional); with the whole-pixel strokes used here it is ints, which int() keeps."""
    left, top, right, bottom = font.getbbox(text, anchor="la", stroke_width=stroke)
    return int(left), int(top), int(right), int(bottom)


def _ink_width(font: FreeTypeFont, text: str, stroke: int) -> int:
    left, _, right, _ = _ink_bbox(font, text, stroke)
    return right - left


def _wrap(words: list[str], font: FreeTypeFont, stroke: int, max_width: int) -> list[str]:
    """Greedy word wrap; a word wider than the line is broken between characters (shared with the video's captions)."""
    return wrap_words(words, font, stroke, max_width)


def _balance(words: list[str], font: FreeTypeFont, stroke: int, max_width: int, n_lines: int) -> list[str]:
    """Re-wrap into the same number of lines at the narrowest width that allows it (CSS text-wrap: balance)."""
    lo, hi = 1, max_width
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_wrap(words, font, stroke, mid)) <= n_lines:
            hi = mid
        else:
            lo = mid + 1
    return _wrap(words, font, stroke, lo)


def _metrics(font: FreeTypeFont, size: int) -> tuple[int, int, int, int, int]:
    """(stroke width, line pitch, height of one line's ink extent, horizontal and vertical panel padding)."""
    stroke = max(1, round(size * 0.025))
    ascent, descent = font.getmetrics()
    extent = ascent + descent + 2 * stroke  # no glyph reaches outside this, stroke included
    pitch = round((ascent + descent) * 0.92) + 2 * stroke
    return stroke, pitch, extent, max(6, round(size * 0.45)), max(4, round(size * 0.3))


def layout_headline(headline: str, aspect_ratio: str, width: int, height: int) -> HeadlineLayout:
    """Fit the headline into the safe box: the largest font size whose wrapped lines fit.

    Pure and deterministic: it only measures text with the bundled font. If
    even the smallest size does not fit, the lines that fit are kept and the
    last one ends in an ellipsis (``truncated=True``).
    """
    box = safe_box(aspect_ratio, width, height)
    _, _, _, _, align, valign = _SAFE[aspect_ratio]
    words = headline.split()
    if not words:
        return HeadlineLayout(aspect_ratio, width, height, box, (), 0, 0, 0, align, (), None, None)

    box_w, box_h = box[2] - box[0], box[3] - box[1]
    short = min(width, height)
    size = max(12, min(round(short * 0.11), round(box_h * 0.45)))
    min_size = max(10, round(short * 0.022))
    truncated = False
    while True:
        font = _font(size, headline)
        stroke, line_height, extent, pad_x, pad_y = _metrics(font, size)
        inner_w, inner_h = box_w - 2 * pad_x, box_h - 2 * pad_y
        room = (inner_h - extent) // line_height + 1 if inner_h >= extent else 0
        if size > min_size and font.getlength(" ".join(words)) > inner_w * room:
            size = max(min_size, math.floor(size * 0.93))  # cannot fit: skip the wrapping
            continue
        lines = _wrap(words, font, stroke, inner_w) if inner_w > 0 else []
        fits = inner_w > 0 and bool(lines) and (len(lines) - 1) * line_height + extent <= inner_h
        if fits or size <= min_size:
            break
        size = max(min_size, math.floor(size * 0.93))
    if fits and len(lines) > 1:
        lines = _balance(words, font, stroke, inner_w, len(lines))
    if not fits:
        max_lines = max(1, room)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            last = lines[-1]
            while last and _ink_width(font, last + "…", stroke) > inner_w:
                last = last[:-1].rstrip()
            lines[-1] = last + "…"
            truncated = True

    # Vertical placement of the block inside the safe box.
    block_h = (len(lines) - 1) * line_height + extent
    if valign == "top":
        top = box[1] + pad_y
    else:
        top = box[1] + pad_y + max(0, (box_h - 2 * pad_y - block_h) // 2)
    origins: list[tuple[int, int]] = []
    ink: list[Box] = []
    for i, line in enumerate(lines):
        ink_l, ink_t, ink_r, ink_b = _ink_bbox(font, line, stroke)
        y = top + i * line_height + stroke
        if align == "left":
            x = box[0] + pad_x - ink_l
        else:
            x = box[0] + (box_w - (ink_r - ink_l)) // 2 - ink_l
        origins.append((x, y))
        ink.append((x + ink_l, y + ink_t, x + ink_r, y + ink_b))
    text_box = (min(k[0] for k in ink), min(k[1] for k in ink), max(k[2] for k in ink), max(k[3] for k in ink))
    panel = (
        max(box[0], text_box[0] - pad_x),
        max(box[1], text_box[1] - pad_y),
        min(box[2], text_box[2] + pad_x),
        min(box[3], text_box[3] + pad_y),
    )
    return HeadlineLayout(
        aspect_ratio=aspect_ratio,
        width=width,
        height=height,
        safe_box=box,
        lines=tuple(lines),
        font_size=size,
        stroke_width=stroke,
        line_height=line_height,
        align=align,
        line_origins=tuple(origins),
        text_box=text_box,
        panel_box=panel,
        truncated=truncated,
    )


def _luminance_percentiles(pixels: PILImage, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float]:
    """Relative luminance at two percentiles of an RGB uint8 PIL image region."""
    t = torch.from_numpy(_np_array(pixels).copy()).reshape(-1, 3).float() / 255.0
    lin = torch.where(t <= 0.04045, t / 12.92, ((t + 0.055) / 1.055) ** 2.4)
    lum = lin @ torch.tensor([0.2126, 0.7152, 0.0722])
    q = torch.quantile(lum, torch.tensor([lo, hi]))
    return float(q[0]), float(q[1])


def _np_array(image: PILImage) -> npt.NDArray[np.uint8]:
    import numpy as np

    return np.asarray(image, dtype=np.uint8)


def _contrast_lum(la: float, lb: float) -> float:
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def draw_headline(image: PILImage, layout: HeadlineLayout, palette: Sequence[RGB]) -> PILImage:
    """Set the headline on a PIL RGB image (returns a new image; pixels change only inside ``panel_box``).

    Light or dark text is chosen from the area behind the text; the panel's
    opacity rises until the text contrasts at least 4.5:1 with both the
    darkest and the lightest 5% of that area (or the panel is nearly opaque).
    """
    from PIL import Image, ImageDraw, ImageFilter

    if not layout.lines or layout.panel_box is None:
        return image.copy()
    out = image.copy()
    px0, py0, px1, py1 = layout.panel_box
    region = out.crop(layout.panel_box)
    lo, hi = _luminance_percentiles(region)
    mean = tuple(float(v) for v in _np_array(region).reshape(-1, 3).mean(axis=0))
    colors = list(palette)
    darkest = min(colors, key=relative_luminance) if colors else (0, 0, 0)
    lightest = max(colors, key=relative_luminance) if colors else (255, 255, 255)
    light_text = relative_luminance(mean) < 0.4
    if light_text:
        panel_color = tuple(round(c * 0.35) for c in darkest)  # deep shade of the darkest brand colour
        shadow_color = (0, 0, 0)
    else:
        panel_color = tuple(round(c + (255 - c) * 0.7) for c in lightest)
        shadow_color = (255, 255, 255)
    panel_lum = relative_luminance(panel_color)
    candidates = [c for c in colors if (relative_luminance(c) > panel_lum) == light_text]
    text_color = pick_text_color(panel_color, candidates or [], min_contrast=4.5)
    if contrast_ratio(text_color, panel_color) < 4.5:
        text_color = (255, 255, 255) if light_text else (0, 0, 0)
    text_lum = relative_luminance(text_color)

    alpha = 0.35
    while alpha < 0.92:
        worst = min(_contrast_lum(text_lum, lum * (1 - alpha) + panel_lum * alpha) for lum in (lo, hi))
        if worst >= 4.5:
            break
        alpha += 0.05
    alpha = min(alpha, 0.92)

    w, h = px1 - px0, py1 - py0
    font = _font(layout.font_size, " ".join(layout.lines))
    radius = max(2, round(layout.font_size * 0.28))
    # Panel.
    panel = Image.new("L", (w, h), 0)
    ImageDraw.Draw(panel).rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, fill=round(255 * alpha))
    region = Image.composite(Image.new("RGB", (w, h), panel_color), region, panel)
    # Soft shadow of the glyphs, offset down-right, kept inside the panel.
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    offset = max(1, round(layout.font_size * 0.035))
    for line, (x, y) in zip(layout.lines, layout.line_origins, strict=True):
        draw.text(
            (x - px0 + offset, y - py0 + offset),
            line,
            font=font,
            fill=255,
            anchor="la",
            stroke_width=layout.stroke_width,
            stroke_fill=255,
        )
    mask = mask.filter(ImageFilter.GaussianBlur(radius=max(1.0, layout.font_size * 0.05)))
    mask = mask.point(lambda v: round(v * 0.55))
    region = Image.composite(Image.new("RGB", (w, h), shadow_color), region, mask)
    # Glyphs.
    draw = ImageDraw.Draw(region)
    for line, (x, y) in zip(layout.lines, layout.line_origins, strict=True):
        draw.text(
            (x - px0, y - py0),
            line,
            font=font,
            fill=tuple(text_color),
            anchor="la",
            stroke_width=layout.stroke_width,
            stroke_fill=tuple(text_color),
        )
    out.paste(region, (px0, py0))
    return out


# --- image operations (torch) -------------------------------------------------------------------------


def decode_source(source_png: bytes, expected_sha256: str) -> PILImage:
    """Check the digest, decode the PNG, return a PIL RGB image (ValueError on any problem)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(source_png, (bytes, bytearray, memoryview)):
        raise ValueError(f"source image must be bytes, got {type(source_png).__name__}")
    data = bytes(source_png)
    digest = hashlib.sha256(data).hexdigest()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256 or ""):
        raise ValueError(f"source_sha256 {expected_sha256!r} is not a sha256 hex digest")
    if digest != expected_sha256.lower():
        raise ValueError(f"source image sha256 mismatch: request says {expected_sha256}, bytes hash to {digest}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise ValueError(f"source image is {im.format or 'an unknown format'}, not PNG")
            if max(im.size) > MAX_SOURCE_SIDE:
                raise ValueError(f"source image {im.size[0]}x{im.size[1]} exceeds {MAX_SOURCE_SIDE} px on a side")
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return im.convert("RGB")
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"source image could not be decoded as PNG ({len(data)} bytes): {exc}") from exc


def _to_tensor(image: PILImage, device: torch.device) -> torch.Tensor:
    """PIL RGB -> float32 [1, 3, H, W] in [0, 1]."""
    arr = torch.from_numpy(_np_array(image).copy())
    return arr.to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _to_pil(t: torch.Tensor) -> PILImage:
    from PIL import Image

    arr = (t.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().cpu()
    return Image.fromarray(arr.numpy())


def upscale(img: torch.Tensor, aspect_ratio: str, width: int, height: int) -> torch.Tensor:
    """Centre-crop [1,3,H,W] to the exact ratio, then bicubic-resize (antialiased) to width x height."""
    a, b = ratio_sides(aspect_ratio)
    h, w = img.shape[-2:]
    cw, ch = _crop_size((w, h), a, b)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    img = img[..., y0 : y0 + ch, x0 : x0 + cw]
    if (cw, ch) == (width, height):
        return img
    return F.interpolate(img, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)


def grade_colors(rgb: torch.Tensor, palette: Sequence[RGB], strength: float = GRADE_STRENGTH) -> torch.Tensor:
    """The grading colour map on sRGB colours [..., 3] in [0, 1].

    In CIE Lab each colour moves ``strength`` of the way toward its softly
    weighted nearest palette colour (lightness by half as much, so the tonal
    structure survives).
    """
    pal = torch.tensor(list(palette), dtype=torch.float32, device=rgb.device) / 255.0
    pal_lab = rgb_to_lab(pal)
    lab = rgb_to_lab(rgb)
    target = soft_nearest_palette(lab, pal_lab, GRADE_TEMPERATURE)
    weights = torch.tensor([0.5 * strength, strength, strength], dtype=rgb.dtype, device=rgb.device)
    return lab_to_rgb(lab + (target - lab) * weights)


def grading_lut(
    palette: Sequence[RGB], strength: float = GRADE_STRENGTH, size: int = LUT_SIZE, device: torch.device | None = None
) -> torch.Tensor:
    """The grading map sampled on a size^3 RGB lattice: [1, 3, size(b), size(g), size(r)], for grid_sample."""
    v = torch.linspace(0.0, 1.0, size, dtype=torch.float32, device=device)
    bb, gg, rr = torch.meshgrid(v, v, v, indexing="ij")
    lattice = torch.stack((rr, gg, bb), dim=-1)  # [b, g, r, 3]
    return grade_colors(lattice, palette, strength).permute(3, 0, 1, 2).unsqueeze(0).contiguous()


def grade_toward_palette(img: torch.Tensor, palette: Sequence[RGB], strength: float = GRADE_STRENGTH) -> torch.Tensor:
    """Apply :func:`grade_colors` to [1,3,H,W] through a 3D LUT (trilinear), as colour graders do.

    A 33^3 lattice is graded exactly and every pixel is interpolated from it:
    the same map, at a fraction of the cost of converting millions of pixels.
    """
    if not palette or strength <= 0:
        return img
    lut = grading_lut(palette, strength, device=img.device)
    grid = (img * 2.0 - 1.0).permute(0, 2, 3, 1).unsqueeze(1)  # [1, 1(D), H, W, 3] as (r->W, g->H, b->D)
    out = F.grid_sample(lut, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2).clamp(0.0, 1.0)


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def unsharp_mask(img: torch.Tensor, amount: float = SHARPEN_AMOUNT, sigma: float = SHARPEN_SIGMA) -> torch.Tensor:
    """img + amount * (img - gaussian_blur(img)) on [1,3,H,W], separable blur with reflect padding."""
    if amount <= 0:
        return img
    k = _gaussian_kernel(sigma, img.device)
    r = (k.numel() - 1) // 2
    c = img.shape[1]
    blurred = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blurred = F.conv2d(F.pad(blurred, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return (img + amount * (img - blurred)).clamp(0.0, 1.0)


def encode_png(image: PILImage) -> bytes:
    """PIL image -> PNG bytes with fixed settings and no metadata."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def refine_image(request: RefineRequest, source_png: bytes, device: torch.device | None = None) -> ImageResult:
    """The whole refinement, synchronously (what the adapter runs in a worker thread)."""
    palette = parse_palette(request.palette, default=())  # validates every colour; empty: no grading
    source = decode_source(source_png, request.source_sha256)
    width, height = target_size(request.aspect_ratio, request.min_short_side, source.size)
    if width * height > MAX_OUTPUT_PIXELS:
        raise ValueError(f"refined size {width}x{height} is over {MAX_OUTPUT_PIXELS} pixels (8K UHD)")
    device = device or pick_device()
    with torch.inference_mode():
        img = _to_tensor(source, device)
        img = upscale(img, request.aspect_ratio, width, height)
        img = grade_toward_palette(img, palette)
        img = unsharp_mask(img)
        pil = _to_pil(img)
    layout = layout_headline(request.headline, request.aspect_ratio, width, height)
    pil = draw_headline(pil, layout, palette)
    return ImageResult(png=encode_png(pil), width=width, height=height)


# --- the adapter ------------------------------------------------------------------------------------


class TorchRefiner:
    """Local ``refine`` adapter: free, no network, torch on pick_device()."""

    def __init__(self, adapter_id: str = "local-refiner", max_concurrency: int = 2) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="refine",
            provider="local",
            model=MODEL_NAME,
            model_version=ALGORITHM_VERSION,
            price=Price(per_image=0.0),
            capabilities=frozenset({"upscale", "palette-grade", "sharpen", "headline", "deterministic"}),
            max_concurrency=max_concurrency,
        )
        self._semaphores = PerLoopSemaphores(max_concurrency)

    def refine_sync(self, request: RefineRequest, source_png: bytes) -> ImageResult:
        return refine_image(request, source_png)

    async def refine(self, request: RefineRequest, source_png: bytes) -> ImageResult:
        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, "local-refine"):
            return await asyncio.to_thread(refine_image, request, source_png)

    async def aclose(self) -> None:
        """Nothing to release."""
