"""The typeface for headlines, burned-in captions and contact sheets.

Roboto (Apache 2.0, shipped by the `font-roboto` package) covers Latin,
Greek and Cyrillic, so "für", "Découvrez" and "Pruébalo" render; Pillow's
bundled default font has no glyphs beyond ASCII. Fonts are loaded per size
once, never at import.
"""

import functools
from pathlib import Path

from PIL import ImageFont


def _roboto_path(weight: str) -> Path:
    import font_roboto

    return Path(font_roboto.font_directory) / f"Roboto-{weight}.ttf"


@functools.lru_cache(maxsize=64)
def load_font(size: int, weight: str = "Medium") -> ImageFont.FreeTypeFont:
    """Roboto at `size` px; `weight` is a Roboto style name (Regular, Medium, Bold, Black)."""
    return ImageFont.truetype(str(_roboto_path(weight)), size=size)
