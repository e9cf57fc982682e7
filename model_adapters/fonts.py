"""The typeface for headlines, burned-in captions and contact sheets.

Roboto (Apache 2.0, shipped by the `font-roboto` package) covers Latin,
Greek and Cyrillic, so "für", "Découvrez" and "Pruébalo" render; Pillow's
bundled default font has no glyphs beyond ASCII. Roboto has no Chinese or
Japanese glyphs: `font_for` sets text that has any in Noto Sans CJK JP Bold
(OFL 1.1, shipped by the `noto-cjk-sans-jp-bold` package; it has Latin too),
whatever weight was asked. Fonts are loaded per size once, never at import.
"""

import functools
import re
from pathlib import Path

from PIL import ImageFont


def _roboto_path(weight: str) -> Path:
    import font_roboto

    return Path(font_roboto.font_directory) / f"Roboto-{weight}.ttf"


@functools.lru_cache(maxsize=64)
def load_font(size: int, weight: str = "Medium") -> ImageFont.FreeTypeFont:
    """Roboto at `size` px; `weight` is a Roboto style name (Regular, Medium, Bold, Black)."""
    return ImageFont.truetype(str(_roboto_path(weight)), size=size)


# Kana, CJK punctuation, kanji (with extension A and compatibility ideographs), full-width forms.
_CJK = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def needs_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@functools.lru_cache(maxsize=64)
def load_cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """Noto Sans CJK JP Bold at `size` px; Roboto (Bold) when the font package is not installed."""
    try:
        import noto_cjk_sans_jp_bold
    except ImportError:  # `make install` installs it; without it CJK text shows as boxes
        return load_font(size, "Bold")
    return ImageFont.truetype(str(noto_cjk_sans_jp_bold.FONT_PATH), size=size)


def font_for(text: str, size: int, weight: str = "Medium") -> ImageFont.FreeTypeFont:
    """The font to set `text` in: Roboto at `weight`, or the CJK font when the text has CJK."""
    return load_cjk_font(size) if needs_cjk(text) else load_font(size, weight)
