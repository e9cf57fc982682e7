"""The aspect ratios a variant can have, as one table, and the exact frame size each gives.

Briefs name a ratio (`AspectRatio`); the image, refine and video stages and
the PNG check turn it into sides from `ASPECT_RATIOS`, never from a table of
their own.
"""

from __future__ import annotations

from typing import Literal

AspectRatio = Literal["9:16", "1:1", "16:9"]

# Ratio name -> (width, height) in lowest terms; the keys are exactly AspectRatio's values.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {"9:16": (9, 16), "1:1": (1, 1), "16:9": (16, 9)}


def ratio_sides(aspect_ratio: str) -> tuple[int, int]:
    """``"9:16"`` -> (9, 16); ValueError naming the known ratios for any other name."""
    try:
        return ASPECT_RATIOS[aspect_ratio]
    except KeyError:
        raise ValueError(f"unsupported aspect ratio {aspect_ratio!r}; expected one of {sorted(ASPECT_RATIOS)}") from None


def frame_size(aspect_ratio: AspectRatio, short_side: int) -> tuple[int, int]:
    """(width, height) with the given short side, the exact ratio, even numbers
    (H.264 with yuv420p needs even dimensions)."""
    w_ratio, h_ratio = ASPECT_RATIOS[aspect_ratio]
    short = short_side - short_side % 2
    long_side = short * max(w_ratio, h_ratio) // min(w_ratio, h_ratio)
    long_side -= long_side % 2
    return (short, long_side) if w_ratio <= h_ratio else (long_side, short)
