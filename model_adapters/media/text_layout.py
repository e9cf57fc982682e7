"""Greedy word wrap by measured ink width (Pillow fonts), shared by the still's headline and the video's captions."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import ImageFont


def text_width(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> float:
    """Ink width of ``text`` drawn with ``font`` and a stroke of ``stroke`` px (anchor "la")."""
    left, _, right, _ = font.getbbox(text, anchor="la", stroke_width=stroke)
    return right - left


def wrap_words(words: Sequence[str], font: ImageFont.FreeTypeFont, stroke: int, max_width: float) -> list[str]:
    """Greedy word wrap; a word wider than the line is broken between characters.

    Japanese has no spaces, so a whole sentence arrives as one word: it starts a
    line of its own and fills as many lines as it needs; the words after it
    continue its last line while they fit.
    """
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if text_width(font, candidate, stroke) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        if text_width(font, word, stroke) <= max_width:
            current = word
            continue
        piece = ""
        for ch in word:
            if piece and text_width(font, piece + ch, stroke) > max_width:
                lines.append(piece)
                piece = ch
            else:
                piece += ch
        current = piece
    if current:
        lines.append(current)
    return lines
