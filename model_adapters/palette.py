"""Brand palette helpers shared by the local image generator and refiner.

Hex parsing, sRGB <-> linear <-> CIE Lab (D65) conversions in torch, nearest
(and soft-nearest) palette colour, and WCAG contrast for picking a text
colour. Colours as tensors are float32 sRGB in [0, 1], channel last
(``[..., 3]``) unless a function says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

RGB = tuple[int, int, int]

_HEX_RE = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")

# Used when a request carries no palette at all: a neutral, designed-looking set.
DEFAULT_PALETTE: tuple[str, ...] = ("#1b1f3b", "#3a4a8c", "#e07a5f", "#f2cc8f", "#f4f1de")

WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)


def parse_hex(color: str) -> RGB:
    """``"#RRGGBB"``, ``"RRGGBB"``, ``"#RGB"`` or ``"RGB"`` -> (r, g, b) ints in 0..255.

    Raises ValueError with the offending value for anything else.
    """
    if not isinstance(color, str):
        raise ValueError(f"palette colour must be a hex string like '#1a2b3c', got {color!r}")
    match = _HEX_RE.match(color.strip())
    if match is None:
        raise ValueError(f"palette colour {color!r} is not a hex colour like '#1a2b3c' or '#abc'")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def to_hex(rgb: Sequence[int]) -> str:
    r, g, b = (max(0, min(255, int(v))) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def parse_palette(palette: Iterable[str], *, default: Sequence[str] | None = DEFAULT_PALETTE) -> list[RGB]:
    """Parse every colour (ValueError names the bad one); an empty palette gives ``default``.

    With ``default=None`` an empty palette is an error.
    """
    colors = [parse_hex(c) for c in palette]
    if not colors:
        if default is None:
            raise ValueError("palette is empty")
        colors = [parse_hex(c) for c in default]
    return colors


def palette_tensor(colors: Sequence[RGB], device: torch.device | str | None = None) -> torch.Tensor:
    """[k, 3] float32 sRGB in [0, 1]."""
    if not colors:
        raise ValueError("palette is empty")
    return torch.tensor(colors, dtype=torch.float32, device=device) / 255.0


# --- colour spaces -------------------------------------------------------------

# sRGB (D65) primaries; plain tuples so importing this module builds no tensors.
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_XYZ_TO_RGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_LAB_EPS = 216.0 / 24389.0
_LAB_KAPPA = 24389.0 / 27.0


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def _white(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_D65_WHITE, dtype=x.dtype, device=x.device)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> CIE Lab [..., 3] (L in 0..100)."""
    lin = srgb_to_linear(rgb)
    xyz = lin @ torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device).T
    t = xyz / _white(xyz)
    f = torch.where(t > _LAB_EPS, t.clamp(min=_LAB_EPS) ** (1.0 / 3.0), (_LAB_KAPPA * t + 16.0) / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return torch.stack((L, a, b), dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab [..., 3] -> sRGB [..., 3] clamped to [0, 1]."""
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    f = torch.stack((fx, fy, fz), dim=-1)
    f3 = f**3
    t = torch.where(f3 > _LAB_EPS, f3, (116.0 * f - 16.0) / _LAB_KAPPA)
    xyz = t * _white(lab)
    lin = xyz @ torch.tensor(_XYZ_TO_RGB, dtype=lab.dtype, device=lab.device).T
    return linear_to_srgb(lin)


# --- nearest palette colour ------------------------------------------------------


def nearest_palette_index(lab: torch.Tensor, palette_lab: torch.Tensor) -> torch.Tensor:
    """Index of the nearest palette colour (Euclidean in Lab, i.e. CIE76) for each [..., 3] colour."""
    d2 = ((lab.unsqueeze(-2) - palette_lab) ** 2).sum(dim=-1)
    return d2.argmin(dim=-1)


def soft_nearest_palette(lab: torch.Tensor, palette_lab: torch.Tensor, temperature: float = 12.0) -> torch.Tensor:
    """Softly weighted nearest palette colour in Lab, [..., 3].

    Weights are ``softmax(-distance / temperature)``: a pixel close to one palette
    colour gets that colour, a pixel halfway between two gets a blend, so grading
    toward it does not posterize smooth gradients.
    """
    d = ((lab.unsqueeze(-2) - palette_lab) ** 2).sum(dim=-1).clamp(min=0.0).sqrt()
    w = torch.softmax(-d / temperature, dim=-1)
    return w @ palette_lab


def mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, ...]:
    """Linear interpolation of two colour tuples."""
    return tuple(x + (y - x) * t for x, y in zip(a, b, strict=True))


# --- contrast ---------------------------------------------------------------------


def relative_luminance(rgb: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour given as 0..255 values."""
    lin = srgb_to_linear(torch.tensor([float(v) / 255.0 for v in rgb], dtype=torch.float64))
    return float(0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2])


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    la, lb = relative_luminance(a), relative_luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def pick_text_color(background: Sequence[float], palette: Sequence[RGB], min_contrast: float = 4.5) -> RGB:
    """The palette colour with the best contrast on ``background`` if it reaches
    ``min_contrast`` (WCAG AA for body text), else white or black, whichever contrasts more."""
    best: RGB | None = None
    best_ratio = 0.0
    for color in palette:
        ratio = contrast_ratio(color, background)
        if ratio > best_ratio:
            best, best_ratio = tuple(color), ratio  # type: ignore[assignment]
    if best is not None and best_ratio >= min_contrast:
        return best
    return WHITE if contrast_ratio(WHITE, background) >= contrast_ratio(BLACK, background) else BLACK
