"""A text-conditioned procedural image generator in torch (the local ``image`` adapter).

No diffusion weights ship with the project, so the local draft image is
*designed* rather than sampled: the prompt's MiniLM sentence embedding (384-d),
the brand palette and the seed choose the parameters of a fixed composition
grammar, and torch renders it:

1. a two-colour gradient background with a radial glow, in linear light;
2. a domain-warped flow field (multi-octave value noise) that bends every
   shape below it;
3. soft "gradient orbs": one hero placed on a rule-of-thirds point and
   satellites around it, lit from one side so they read as volumes;
4. an accent arc, flowing contour lines and an optional halftone dot patch;
5. a paper texture, a vignette and monochrome film grain.

How the prompt drives it: a fixed random projection (seeded, so the same on
every run and machine) maps the embedding to ``N_FEATURES`` roughly standard
normal features; they are blended with seed-driven normals and squashed to
(0, 1). Similar prompts get similar pictures; unrelated prompts get unrelated
layouts, shapes, frequencies and colour assignments. Every colour comes from
the palette (or mixes of it with black or white).

Determinism: all random numbers come from ``torch.Generator`` objects seeded
from the request, on CPU; rendering uses elementwise ops, bicubic
``grid_sample`` (deterministic forward) and fixed-order compositing, and the PNG
is written with fixed settings and no metadata, so an equal request gives
byte-identical PNG bytes on the same machine and torch build. The prompt is
embedded alone (never padded in a batch) and the projected features are
rounded, so tiny float differences do not leak into the picture.

Bump ``ALGORITHM_VERSION`` whenever a change alters the output: it is the
adapter's ``model_version`` and so part of the cache key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.devices import pick_device
from model_adapters.palette import RGB, parse_palette, relative_luminance, srgb_to_linear
from model_adapters.types import AdapterInfo, ImageRequest, ImageResult, Price


class TextEmbedder(Protocol):
    """What the generator needs of an embedder (model_adapters.text_embedding.MiniLMEmbedder)."""

    def embed(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor: ...


ALGORITHM_VERSION = "1"
MODEL_NAME = "procedural-minilm"

N_FEATURES = 192
N_BLOBS = 6
N_OCTAVES = 4
EMBEDDING_DIM = 384
_PROJECTION_SEED = 0x5EED_1DEA_2024
_PROMPT_WEIGHT = 0.9  # share of each feature's variance that comes from the prompt...
_SEED_WEIGHT = math.sqrt(1.0 - _PROMPT_WEIGHT**2)  # ...and from the seed
_FEATURE_DECIMALS = 3
MAX_PIXELS = 4096 * 4096  # a draft larger than this is refused (memory), ask the refiner to upscale
_MAX_NOISE_FREQ = 3.5  # lattice cells per short side, lowest octave
_BLOB_WARP = (1.0, 1.0, 0.15, 0.3, 0.3, 0.3)  # per orb: bokeh, bokeh, hero, accents


# --- sizes -------------------------------------------------------------------------


def parse_aspect_ratio(aspect_ratio: str) -> tuple[int, int]:
    """``"9:16"`` -> (9, 16). Any ``"a:b"`` with positive integers is accepted."""
    try:
        a_str, b_str = aspect_ratio.split(":")
        a, b = int(a_str), int(b_str)
    except (AttributeError, ValueError):
        raise ValueError(f"aspect ratio {aspect_ratio!r} is not of the form 'W:H', e.g. '9:16'") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"aspect ratio {aspect_ratio!r} must have positive sides")
    return a, b


def draft_size(aspect_ratio: str, long_side: int = 1024) -> tuple[int, int]:
    """(width, height) of a draft whose long side is ``long_side``, both even.

    ``draft_size("9:16") == (576, 1024)``, ``draft_size("16:9") == (1024, 576)``,
    ``draft_size("1:1") == (1024, 1024)``, ``draft_size("1:1", 768) == (768, 768)``.
    """
    a, b = parse_aspect_ratio(aspect_ratio)
    if long_side < 2:
        raise ValueError(f"long_side must be at least 2, got {long_side}")
    long_even = long_side - (long_side % 2)
    short = max(2, int(round(long_even * min(a, b) / max(a, b) / 2.0)) * 2)
    return (long_even, short) if a >= b else (short, long_even)


# --- features ----------------------------------------------------------------------

# Sentence embeddings are anisotropic: every MiniLM vector shares a large common
# direction, so a raw projection would give each feature a prompt-independent
# bias (one feature "always on", another "never"). Features are therefore
# standardised with the mean and spread of these reference prompts, embedded
# once, lazily. They are part of the algorithm: changing them means bumping
# ALGORITHM_VERSION.
REFERENCE_PROMPTS: tuple[str, ...] = (
    "a red sports car on a coastal road at sunset",
    "a steaming bowl of ramen in a cozy kitchen",
    "running shoes for city joggers on an early morning",
    "a calm meditation app with soft morning light",
    "fresh organic vegetables at a farmers market",
    "a luxury watch on black velvet",
    "kids playing with colourful building blocks",
    "a cloud software dashboard for small businesses",
    "a cold sparkling lemonade on a hot summer day",
    "a mountain cabin covered in snow at night",
    "a smartphone with a bright camera and long battery life",
    "a cup of espresso on a marble counter",
    "an electric bicycle commuting through a rainy city",
    "skincare serum with botanical ingredients",
    "a family road trip through the desert",
    "a fintech card for students with cashback",
    "a dog running on the beach with a frisbee",
    "noise cancelling headphones on a long flight",
    "a vegan burger with crispy fries",
    "a yoga retreat on a tropical island",
    "an insurance plan that protects your home",
    "a gaming laptop with neon lights",
    "handmade ceramic mugs in earthy tones",
    "a bank for small business loans",
    "a music festival crowd under stage lights",
    "a winter jacket for hiking in the Alps",
    "a language learning app for travellers",
    "a bottle of red wine at a candlelit dinner",
    "solar panels on a suburban roof",
    "a bakery with warm croissants in the morning",
    "an online course for data science beginners",
    "a minimalist desk setup with a plant",
)

_feature_basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
_feature_basis_lock = threading.Lock()


def _seed64(*parts: object) -> int:
    """A 63-bit generator seed from any request values (stable across processes, unlike hash())."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def _get_feature_basis(embed_one: Callable[[str], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean embedding [384], projection [384, N], per-feature std [N]), float64 CPU, built once.

    The projection comes from a constant seed; the mean and spread from the
    reference prompts, each embedded alone (no padding effects).
    """
    global _feature_basis
    if _feature_basis is None:
        with _feature_basis_lock:
            if _feature_basis is None:
                gen = torch.Generator(device="cpu").manual_seed(_PROJECTION_SEED)
                projection = torch.randn(EMBEDDING_DIM, N_FEATURES, generator=gen, dtype=torch.float64)
                refs = torch.stack([embed_one(p).to("cpu", torch.float64) for p in REFERENCE_PROMPTS])
                refs = torch.round(refs * 1e5) / 1e5
                mean = refs.mean(dim=0)
                std = ((refs - mean) @ projection).std(dim=0).clamp(min=1e-6)
                _feature_basis = (mean, projection, std)
    return _feature_basis


def prompt_features(embedding: torch.Tensor, seed: int, embed_one: Callable[[str], torch.Tensor]) -> list[float]:
    """N_FEATURES values in (0, 1) from a prompt embedding and the seed.

    ``embed_one(text) -> [384]`` is used (once per process) to embed the
    reference prompts. Each feature is a standardised random projection of the
    centred embedding (about N(0, 1) across prompts), mixed with a seed-driven
    normal and squashed through the normal CDF, so it is about uniform.
    """
    if embedding.shape != (EMBEDDING_DIM,):
        raise ValueError(f"expected a [{EMBEDDING_DIM}] embedding, got {tuple(embedding.shape)}")
    mean, projection, std = _get_feature_basis(embed_one)
    e = torch.round(embedding.detach().to("cpu", torch.float64) * 1e5) / 1e5
    f = ((e - mean) @ projection) / std
    f = torch.round(f * 10**_FEATURE_DECIMALS) / 10**_FEATURE_DECIMALS
    gen = torch.Generator(device="cpu").manual_seed(_seed64("features", seed))
    z = torch.randn(N_FEATURES, generator=gen, dtype=torch.float64)
    g = _PROMPT_WEIGHT * f + _SEED_WEIGHT * z
    u = 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0)))
    return [min(max(v, 1e-6), 1.0 - 1e-6) for v in u.tolist()]


class _Features:
    """Hands out features in a fixed order, so each composition parameter has its own."""

    def __init__(self, values: Sequence[float]):
        self._values = list(values)
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._values):
            raise RuntimeError("composition needs more features than N_FEATURES; raise it")
        v = self._values[self._i]
        self._i += 1
        return v

    def range(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.u()

    def index(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def chance(self, p: float) -> bool:
        return self.u() < p


# --- composition parameters -----------------------------------------------------------

_THIRDS = ((1 / 3, 1 / 3), (2 / 3, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 2 / 3))


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, float, float]:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _extend_palette(colors: list[RGB]) -> list[tuple[float, float, float]]:
    """Palette as 0..1 sRGB tuples sorted dark to light, with at least three tones."""
    rgb = sorted(
        ((c[0] / 255.0, c[1] / 255.0, c[2] / 255.0) for c in colors),
        key=lambda c: relative_luminance([v * 255 for v in c]),
    )
    if len(rgb) == 1:
        c = rgb[0]
        rgb = [_mix(c, (0, 0, 0), 0.55), c, _mix(c, (1, 1, 1), 0.45)]
    elif len(rgb) == 2:
        rgb = [rgb[0], _mix(rgb[0], rgb[1], 0.5), rgb[1]]
    return rgb


@dataclass(frozen=True)
class Composition:
    """Every parameter of one picture; colours are linear-light RGB."""

    dark_mode: bool
    bg0: tuple[float, float, float]
    bg1: tuple[float, float, float]
    bg_angle: float
    glow_color: tuple[float, float, float]
    glow_center: tuple[float, float]
    glow_radius: float
    glow_strength: float
    warp_amount: float
    noise_freq: float
    noise_angle: float
    blob_center: tuple[tuple[float, float], ...]
    blob_radius: tuple[float, ...]
    blob_stretch: tuple[float, ...]
    blob_angle: tuple[float, ...]
    blob_softness: tuple[float, ...]
    blob_opacity: tuple[float, ...]
    blob_color: tuple[tuple[float, float, float], ...]
    blob_shade: tuple[float, ...]
    light_angle: float
    ring_on: bool
    ring_center: tuple[float, float]
    ring_radius: float
    ring_width: float
    ring_start: float
    ring_span: float
    ring_color: tuple[float, float, float]
    ring_opacity: float
    lines_freq: float
    lines_angle: float
    lines_warp: float
    lines_width_px: float
    lines_center: tuple[float, float]
    lines_radius: float
    lines_color: tuple[float, float, float]
    lines_opacity: float
    dots_on: bool
    dots_corner: int
    dots_spacing: float
    dots_extent: float
    dots_color: tuple[float, float, float]
    dots_opacity: float
    texture: float
    vignette: float
    grain: float
    noise_seed: int
    grain_seed: int


def _linear(c: Sequence[float]) -> tuple[float, float, float]:
    lin = srgb_to_linear(torch.tensor(list(c), dtype=torch.float64))
    return (float(lin[0]), float(lin[1]), float(lin[2]))


def compose(features: Sequence[float], colors: list[RGB], seed: int, prompt: str) -> Composition:
    """Turn features + palette + seed into a Composition (pure; cheap)."""
    ft = _Features(features)
    pal = _extend_palette(colors)
    n = len(pal)
    darkest, lightest = pal[0], pal[-1]
    black, white = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    dark_mode = ft.chance(0.68)
    if dark_mode:
        bg0 = _mix(darkest, black, ft.range(0.25, 0.6))
        bg1 = _mix(pal[ft.index(n)], darkest, ft.range(0.35, 0.7))
        bg1 = _mix(bg1, black, 0.15)
        accents = pal[1:] if n > 1 else pal
    else:
        bg0 = _mix(lightest, white, ft.range(0.25, 0.6))
        bg1 = _mix(pal[ft.index(n)], lightest, ft.range(0.45, 0.75))
        accents = pal[:-1] if n > 1 else pal
    na = len(accents)
    bg_angle = ft.range(0.0, 2 * math.pi)
    glow_color = accents[ft.index(na)]
    glow_center = (ft.range(0.1, 0.9), ft.range(0.05, 0.6))
    glow_radius = ft.range(0.35, 0.9)
    glow_strength = ft.range(0.25, 0.6)

    warp_amount = ft.range(0.01, 0.045)
    noise_freq = ft.range(1.2, _MAX_NOISE_FREQ)
    noise_angle = ft.range(0.0, math.pi)

    # Orbs, drawn in this order: two large out-of-focus ones behind, the hero
    # (a crisp lit sphere near a rule-of-thirds point), then small accents.
    by_chroma = sorted(accents, key=lambda c: -(max(c) - min(c)))
    vivid = by_chroma[: max(1, (na + 1) // 2)]
    hero_point = _THIRDS[ft.index(4)]
    hero_center = (hero_point[0] + ft.range(-0.07, 0.07), hero_point[1] + ft.range(-0.07, 0.07))
    centers: list[tuple[float, float]] = []
    radii: list[float] = []
    softness: list[float] = []
    opacity: list[float] = []
    shade: list[float] = []
    colors_k: list[tuple[float, float, float]] = []
    for k in range(N_BLOBS):
        if k < 2:  # background bokeh
            centers.append((ft.range(-0.1, 1.1), ft.range(-0.1, 1.1)))
            radii.append(ft.range(0.3, 0.6))
            softness.append(ft.range(0.85, 1.0))
            opacity.append(ft.range(0.3, 0.6))
            shade.append(ft.range(0.0, 0.25))
            colors_k.append(accents[ft.index(na)])
        elif k == 2:  # hero
            centers.append(hero_center)
            radii.append(ft.range(0.24, 0.4))
            softness.append(ft.range(0.004, 0.04))
            opacity.append(ft.range(0.92, 1.0))
            shade.append(ft.range(0.45, 0.75))
            colors_k.append(vivid[ft.index(len(vivid))])
        else:  # small accents, kept off the hero's centre
            ang = ft.range(0.0, 2 * math.pi)
            dist = ft.range(0.3, 0.75)
            cx = min(max(hero_center[0] + dist * math.cos(ang), 0.06), 0.94)
            cy = min(max(hero_center[1] + dist * math.sin(ang), 0.06), 0.94)
            centers.append((cx, cy))
            radii.append(ft.range(0.025, 0.11))
            softness.append(ft.range(0.02, 0.5))
            opacity.append(ft.range(0.75, 1.0))
            shade.append(ft.range(0.3, 0.6))
            colors_k.append(accents[ft.index(na)])
    blob_stretch = tuple(ft.range(0.85, 1.2) for _ in range(N_BLOBS))
    blob_angle = tuple(ft.range(0.0, math.pi) for _ in range(N_BLOBS))
    blob_softness = tuple(softness)
    blob_opacity = tuple(opacity)
    blob_color = tuple(colors_k)
    blob_shade = tuple(shade)
    light_angle = ft.range(0.0, 2 * math.pi)

    ring_on = ft.chance(0.7)
    ring_center = (hero_center[0] + ft.range(-0.12, 0.12), hero_center[1] + ft.range(-0.12, 0.12))
    ring_radius = radii[2] * ft.range(1.15, 1.6)
    ring_width = ft.range(0.004, 0.014)
    ring_start = ft.range(0.0, 2 * math.pi)
    ring_span = ft.range(1.2 * math.pi, 1.9 * math.pi)
    ring_color = lightest if dark_mode else darkest
    ring_color = _mix(ring_color, accents[ft.index(na)], ft.range(0.0, 0.5))
    ring_opacity = ft.range(0.45, 0.85)

    lines_freq = ft.range(5.0, 16.0)
    lines_angle = ft.range(0.0, math.pi)
    lines_warp = ft.range(0.6, 2.2)
    lines_width_px = ft.range(0.8, 1.8)
    lines_center = (ft.range(0.0, 1.0), ft.range(0.0, 1.0))
    lines_radius = ft.range(0.45, 0.9)
    lines_color = white if dark_mode else darkest
    lines_color = _mix(lines_color, accents[ft.index(na)], ft.range(0.0, 0.6))
    lines_opacity = ft.range(0.08, 0.22)

    dots_on = ft.chance(0.5)
    dots_corner = ft.index(4)
    dots_spacing = ft.range(0.022, 0.04)
    dots_extent = ft.range(0.14, 0.26)
    dots_color = lightest if dark_mode else darkest
    dots_opacity = ft.range(0.3, 0.6)

    texture = ft.range(0.03, 0.08)
    vignette = ft.range(0.15, 0.35) if dark_mode else ft.range(0.06, 0.16)
    grain = 0.012

    lin = _linear
    return Composition(
        dark_mode=dark_mode,
        bg0=lin(bg0),
        bg1=lin(bg1),
        bg_angle=bg_angle,
        glow_color=lin(glow_color),
        glow_center=glow_center,
        glow_radius=glow_radius,
        glow_strength=glow_strength,
        warp_amount=warp_amount,
        noise_freq=noise_freq,
        noise_angle=noise_angle,
        blob_center=tuple(centers),
        blob_radius=tuple(radii),
        blob_stretch=blob_stretch,
        blob_angle=blob_angle,
        blob_softness=blob_softness,
        blob_opacity=blob_opacity,
        blob_color=tuple(lin(c) for c in blob_color),
        blob_shade=blob_shade,
        light_angle=light_angle,
        ring_on=ring_on,
        ring_center=ring_center,
        ring_radius=ring_radius,
        ring_width=ring_width,
        ring_start=ring_start,
        ring_span=ring_span,
        ring_color=lin(ring_color),
        ring_opacity=ring_opacity,
        lines_freq=lines_freq,
        lines_angle=lines_angle,
        lines_warp=lines_warp,
        lines_width_px=lines_width_px,
        lines_center=lines_center,
        lines_radius=lines_radius,
        lines_color=lin(lines_color),
        lines_opacity=lines_opacity,
        dots_on=dots_on,
        dots_corner=dots_corner,
        dots_spacing=dots_spacing,
        dots_extent=dots_extent,
        dots_color=lin(dots_color),
        dots_opacity=dots_opacity,
        texture=texture,
        vignette=vignette,
        grain=grain,
        noise_seed=_seed64("noise", seed, prompt),
        grain_seed=_seed64("grain", seed),
    )


# --- rendering ------------------------------------------------------------------------


def _smoothstep(e0: float | torch.Tensor, e1: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _over(dst: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Normal blend. dst [B,3,H,W], color [B,3,1,1] or [B,3,H,W], alpha [B,1,H,W]."""
    return dst + (color - dst) * alpha


def _col(values: Sequence[Sequence[float]], device: torch.device) -> torch.Tensor:
    """[B,3,1,1] colour tensor from B tuples."""
    return torch.tensor([list(v) for v in values], dtype=torch.float32, device=device).view(-1, 3, 1, 1)


def _scalar(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """[B,1,1,1] tensor from B floats."""
    return torch.tensor(list(values), dtype=torch.float32, device=device).view(-1, 1, 1, 1)


def _fbm(comps: Sequence[Composition], x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Three channels of value noise in about [-1, 1], [B,3,H,W].

    Channels 0-1 sum the two lowest octaves (a smooth field that warps shapes);
    channel 2 sums all ``N_OCTAVES`` (fractal texture, contour-line wobble).
    Each image's lattice comes from its own seeded CPU generator, with a size
    that depends only on the image size (so batching does not change it), and
    is sampled along rotated, scaled coordinates (orientation and frequency from
    the prompt) with bicubic interpolation.
    """
    B = len(comps)
    H, W = y.shape[-2], x.shape[-1]
    extent = float(max(x.max().item(), y.max().item())) * 1.5 + 1.0
    gens = [torch.Generator(device="cpu").manual_seed(c.noise_seed) for c in comps]
    cx = float(x.max().item()) / 2
    cy = float(y.max().item()) / 2
    xx = (x - cx).expand(B, 1, H, W)
    yy = (y - cy).expand(B, 1, H, W)
    ang = _scalar([c.noise_angle for c in comps], device)
    ca, sa = torch.cos(ang), torch.sin(ang)
    xr = xx * ca - yy * sa
    yr = xx * sa + yy * ca
    freq = _scalar([c.noise_freq for c in comps], device)
    total = torch.zeros(B, 3, H, W, dtype=torch.float32, device=device)
    low = total
    norm = low_norm = 0.0
    for octave in range(N_OCTAVES):
        scale = 2.0**octave
        amp = 0.5**octave
        cells = int(math.ceil(_MAX_NOISE_FREQ * scale * extent)) + 4
        lattice = torch.stack([torch.rand(3, cells, cells, generator=g) * 2.0 - 1.0 for g in gens]).to(device)
        # Lattice coordinates in cells, centred; then to grid_sample's [-1, 1].
        gx = (xr * freq * scale + cells / 2.0) / cells * 2.0 - 1.0
        gy = (yr * freq * scale + cells / 2.0) / cells * 2.0 - 1.0
        grid = torch.cat((gx, gy), dim=1).permute(0, 2, 3, 1)  # [B,H,W,2]
        total = total + amp * F.grid_sample(lattice, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
        norm += amp
        if octave < 2:
            low, low_norm = total, norm
    out = torch.cat((low[:, 0:2] / low_norm, total[:, 2:3] / norm), dim=1)
    return (out * 1.6).clamp(-1.0, 1.0)


def render(comps: Sequence[Composition], width: int, height: int, device: torch.device) -> torch.Tensor:
    """Render a batch of same-size compositions -> uint8 [B, H, W, 3] on CPU."""
    H, W = height, width
    s = float(min(H, W))
    fw, fh = W / s, H / s  # frame size in short-side units
    x = ((torch.arange(W, dtype=torch.float32, device=device) + 0.5) / s).view(1, 1, 1, W)
    y = ((torch.arange(H, dtype=torch.float32, device=device) + 0.5) / s).view(1, 1, H, 1)

    def pos(values: Sequence[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        return _scalar([v[0] * fw for v in values], device), _scalar([v[1] * fh for v in values], device)

    noise = _fbm(comps, x, y, device)  # [B,3,H,W]
    warp = _scalar([c.warp_amount for c in comps], device)
    xw = x + warp * noise[:, 0:1]  # channels 0-1: two smooth octaves (shape warp)
    yw = y + warp * noise[:, 1:2]

    # 1. background gradient along an angle, plus a radial glow.
    ang = _scalar([c.bg_angle for c in comps], device)
    half_diag = 0.5 * math.hypot(fw, fh)
    t = ((x - fw / 2) * torch.cos(ang) + (y - fh / 2) * torch.sin(ang)) / (2 * half_diag) + 0.5
    t = _smoothstep(0.0, 1.0, t)
    img = _col([c.bg0 for c in comps], device) * (1 - t) + _col([c.bg1 for c in comps], device) * t
    gx, gy = pos([c.glow_center for c in comps])
    gd2 = ((xw - gx) ** 2 + (yw - gy) ** 2) / _scalar([c.glow_radius for c in comps], device) ** 2
    glow = torch.exp(-gd2 * 1.5) * _scalar([c.glow_strength for c in comps], device)
    img = _over(img, _col([c.glow_color for c in comps], device), glow)

    # 2. flowing contour lines, masked to a soft region.
    lang = _scalar([c.lines_angle for c in comps], device)
    lfreq = _scalar([c.lines_freq for c in comps], device)
    coord = xw * torch.cos(lang) + yw * torch.sin(lang)
    phase = 2 * math.pi * (lfreq * coord + _scalar([c.lines_warp for c in comps], device) * noise[:, 2:3])
    dist_px = torch.sin(phase).abs() / (2 * math.pi * lfreq) * s
    half_w = _scalar([c.lines_width_px for c in comps], device) / 2
    line = 1.0 - _smoothstep(half_w, half_w + 1.0, dist_px)
    lx, ly = pos([c.lines_center for c in comps])
    region = 1.0 - _smoothstep(0.2, 1.0, torch.sqrt((x - lx) ** 2 + (y - ly) ** 2) / _scalar([c.lines_radius for c in comps], device))
    img = _over(
        img,
        _col([c.lines_color for c in comps], device),
        line * region * _scalar([c.lines_opacity for c in comps], device),
    )

    # 3. gradient orbs, warped by the flow field, lit from one side.
    lang = _scalar([c.light_angle for c in comps], device)
    lcos, lsin = torch.cos(lang), torch.sin(lang)
    for k in range(N_BLOBS):
        bx, by = pos([c.blob_center[k] for c in comps])
        r = _scalar([c.blob_radius[k] for c in comps], device)
        st = _scalar([c.blob_stretch[k] for c in comps], device)
        ba = _scalar([c.blob_angle[k] for c in comps], device)
        # The flow field bends the soft orbs fully, the hero and accents barely.
        bend = _BLOB_WARP[k]
        dx = x + warp * bend * noise[:, 0:1] - bx
        dy = y + warp * bend * noise[:, 1:2] - by
        u = (dx * torch.cos(ba) + dy * torch.sin(ba)) / st
        v = (-dx * torch.sin(ba) + dy * torch.cos(ba)) * st
        d = torch.sqrt(u * u + v * v) / r
        soft = _scalar([c.blob_softness[k] for c in comps], device)
        edge_px = 1.5 / (r * s)  # at least ~1.5 px of antialiasing on crisp orbs
        alpha = 1.0 - _smoothstep(1.0 - soft - edge_px, 1.0 + edge_px, d)
        alpha = alpha * _scalar([c.blob_opacity[k] for c in comps], device)
        base = _col([c.blob_color[k] for c in comps], device)
        shade = _scalar([c.blob_shade[k] for c in comps], device)
        # Sphere-like shading: lighter toward the light, darker away from it.
        toward = _smoothstep(-1.0, 1.0, -(dx * lcos + dy * lsin) / r)
        light_side = base + (1.0 - base) * shade * 0.7
        dark_side = base * (1.0 - shade * 0.85)
        color = dark_side + (light_side - dark_side) * toward
        img = _over(img, color, alpha)

    # 4. accent arc.
    ring = [c for c in comps if c.ring_on]
    if ring:
        on = _scalar([1.0 if c.ring_on else 0.0 for c in comps], device)
        rx, ry = pos([c.ring_center for c in comps])
        dist = torch.sqrt((x - rx) ** 2 + (y - ry) ** 2)
        rr = _scalar([c.ring_radius for c in comps], device)
        rw = _scalar([c.ring_width for c in comps], device)
        band_px = (dist - rr).abs() * s
        half_px = rw * s / 2
        a = 1.0 - _smoothstep(half_px, half_px + 1.0, band_px)
        theta = torch.atan2(y - ry, x - rx)
        rel = torch.remainder(theta - _scalar([c.ring_start for c in comps], device), 2 * math.pi)
        span = _scalar([c.ring_span for c in comps], device)
        arc = _smoothstep(0.0, 0.35, rel) * (1.0 - _smoothstep(span - 0.35, span, rel))
        a = a * arc * on * _scalar([c.ring_opacity for c in comps], device)
        img = _over(img, _col([c.ring_color for c in comps], device), a)

    # 5. halftone dot patch in one corner.
    if any(c.dots_on for c in comps):
        on = _scalar([1.0 if c.dots_on else 0.0 for c in comps], device)
        sp = _scalar([c.dots_spacing for c in comps], device)
        fx = torch.remainder(x / sp, 1.0) - 0.5
        fy = torch.remainder(y / sp, 1.0) - 0.5
        dd_px = torch.sqrt(fx * fx + fy * fy) * sp * s
        rad_px = sp * s * 0.16
        dots = 1.0 - _smoothstep(rad_px - 0.5, rad_px + 0.5, dd_px)
        corner_x = _scalar([0.06 * fw if c.dots_corner % 2 == 0 else fw * 0.94 for c in comps], device)
        corner_y = _scalar([0.06 * fh if c.dots_corner < 2 else fh * 0.94 for c in comps], device)
        ext = _scalar([c.dots_extent for c in comps], device)
        inside = 1.0 - _smoothstep(0.6, 1.0, torch.maximum((x - corner_x).abs(), (y - corner_y).abs()) / ext)
        img = _over(
            img,
            _col([c.dots_color for c in comps], device),
            dots * inside * on * _scalar([c.dots_opacity for c in comps], device),
        )

    # 6. paper texture and vignette (in linear light), then to sRGB.
    img = img * (1.0 + _scalar([c.texture for c in comps], device) * noise[:, 2:3])
    rad = torch.sqrt((x - fw / 2) ** 2 + (y - fh / 2) ** 2) / half_diag
    img = img * (1.0 - _scalar([c.vignette for c in comps], device) * _smoothstep(0.35, 1.05, rad))
    img = img.clamp(0.0, 1.0)
    img = torch.where(img <= 0.0031308, img * 12.92, 1.055 * img.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)

    # 7. monochrome film grain from a seeded CPU generator (same noise on any device).
    grain = torch.stack([torch.randn(1, H, W, generator=torch.Generator(device="cpu").manual_seed(c.grain_seed)) for c in comps]).to(device)
    img = img + grain * _scalar([c.grain for c in comps], device)
    out = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu()


def encode_png(pixels: torch.Tensor) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (fixed settings, no metadata: equal pixels give equal bytes)."""
    from PIL import Image

    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] pixels, got {pixels.dtype} {tuple(pixels.shape)}")
    image = Image.fromarray(pixels.numpy())  # uint8 HxWx3 -> RGB
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast; ~13% larger than level 6
    return buf.getvalue()


# --- the adapter -------------------------------------------------------------------------


class ProceduralImageGenerator:
    """Local ``image`` adapter: MiniLM-conditioned procedural drafts, free, no network."""

    def __init__(self, adapter_id: str = "local-procedural", max_concurrency: int = 2, embedder: TextEmbedder | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="image",
            provider="local",
            model=MODEL_NAME,
            model_version=ALGORITHM_VERSION,
            price=Price(per_image=0.0),
            capabilities=frozenset({"text-to-image", "deterministic", "palette"}),
            max_concurrency=max_concurrency,
        )
        self._embedder = embedder  # None: the process-wide MiniLM, fetched on first use
        self._semaphores = PerLoopSemaphores(max_concurrency)
        self._cache: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- prompt embeddings (one at a time, cached) --

    def _get_embedder(self) -> TextEmbedder:
        if self._embedder is None:
            from model_adapters.text_embedding import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def embed_prompt(self, prompt: str) -> torch.Tensor:
        """The prompt's [384] embedding; embedded alone so batch padding cannot change it."""
        with self._cache_lock:
            hit = self._cache.get(prompt)
            if hit is not None:
                self._cache.move_to_end(prompt)
                return torch.tensor(hit, dtype=torch.float32)
        vec = self._get_embedder().embed([prompt])[0]
        with self._cache_lock:
            self._cache[prompt] = tuple(vec.tolist())
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return vec

    # -- synchronous core --

    def composition(self, request: ImageRequest) -> Composition:
        if request.width * request.height > MAX_PIXELS:
            raise ValueError(
                f"{request.width}x{request.height} is over the local generator's {MAX_PIXELS} pixels; "
                "generate a smaller draft and refine it"
            )
        colors = parse_palette(request.palette)
        features = prompt_features(self.embed_prompt(request.prompt), request.seed, self.embed_prompt)
        return compose(features, colors, request.seed, request.prompt)

    def generate_sync(self, request: ImageRequest) -> ImageResult:
        return self.generate_batch_sync([request])[0]

    def generate_batch_sync(self, requests: Sequence[ImageRequest]) -> list[ImageResult]:
        """Render many requests; those of equal size share one batched render."""
        comps = [self.composition(r) for r in requests]
        device = pick_device()
        results: list[ImageResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.width, r.height), []).append(i)
        with torch.inference_mode():
            for (w, h), idx in groups.items():
                pixels = render([comps[i] for i in idx], w, h, device)
                for j, i in enumerate(idx):
                    results[i] = ImageResult(png=encode_png(pixels[j]), width=w, height=h)
        return [r for r in results if r is not None]

    # -- async adapter API --

    async def generate(self, request: ImageRequest) -> ImageResult:
        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, "local-image"):
            return await asyncio.to_thread(self.generate_sync, request)

    async def generate_many(self, requests: Sequence[ImageRequest]) -> list[ImageResult]:
        """One batched call for many variants (counts as one slot of concurrency)."""
        if not requests:
            return []
        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, "local-image"):
            return await asyncio.to_thread(self.generate_batch_sync, list(requests))

    async def aclose(self) -> None:
        """Nothing to release: the embedder is shared by the process; drop the prompt cache."""
        with self._cache_lock:
            self._cache.clear()
