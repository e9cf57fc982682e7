"""What a provider sent, said plainly: for error messages that read the same on every run.

An exception's text can carry an object's repr with its memory address (PIL:
"cannot identify image file <_io.BytesIO object at 0x7f...>"), so the same
failure would read differently each time. Messages name what was received
instead: its size, its declared content type, what its first bytes look
like, and those bytes.
"""

from __future__ import annotations

import re

_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")

# (test on the first bytes, what it is)
_SIGNATURES: tuple[tuple[object, str], ...] = (
    (lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), "PNG"),
    (lambda b: b.startswith(b"\xff\xd8\xff"), "JPEG"),
    (lambda b: b[:6] in (b"GIF87a", b"GIF89a"), "GIF"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", "WebP"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE", "WAV"),
    (lambda b: b[4:8] == b"ftyp", "MP4"),
    (lambda b: b[:3] == b"ID3" or b[:2] == b"\xff\xfb", "MP3"),
    (lambda b: b"<svg" in b[:512].lower(), "SVG (a vector drawing, not a raster image)"),
    (lambda b: b.lstrip()[:1] in (b"{", b"["), "JSON"),
    (lambda b: b.lstrip()[:14].lower().startswith((b"<!doctype html", b"<html")), "HTML"),
)


def sniff(data: bytes) -> str:
    """What the bytes look like, from their first bytes ('unknown' when nothing matches)."""
    if not data:
        return "nothing (empty)"
    head = data[:512]
    for test, name in _SIGNATURES:
        if test(head):  # type: ignore[operator]
            return name
    return "text" if all(32 <= c < 127 or c in (9, 10, 13) for c in head[:64]) else "unknown binary data"


def describe_received(data: bytes, content_type: str | None = None) -> str:
    """'received 312 bytes (image/svg+xml) that look like SVG ..., starting b'<svg xmlns=...''"""
    declared = f" ({content_type})" if content_type else ""
    return f"received {len(data)} bytes{declared} that look like {sniff(data)}, starting {data[:24]!r}"


def error_text(exc: BaseException) -> str:
    """`Type: message` with object reprs' addresses taken out."""
    return f"{type(exc).__name__}: {_OBJECT_REPR.sub(lambda m: f'<{m.group(1)}>', str(exc))}"


# Declared media type -> what `sniff` calls bytes of that type.
_SNIFFED_AS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WebP",
    "audio/wav": "WAV",
    "audio/x-wav": "WAV",
    "audio/wave": "WAV",
    "video/mp4": "MP4",
    "audio/mpeg": "MP3",
}


def media_mismatch(data: bytes, media_type: str) -> str | None:
    """Why `data` is not a `media_type` file, from its first bytes (None when it looks like one,
    or the type is not one this knows)."""
    expected = _SNIFFED_AS.get(media_type.split(";")[0].strip().lower())
    if expected is None or sniff(data) == expected:
        return None
    return f"declared {media_type}, but {describe_received(data)}"
