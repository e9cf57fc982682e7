"""Provider media bytes -> checked task results: images, base64 and ``data:`` URIs, WAV and raw PCM.

Images are verified with Pillow and fitted to the requested size; WAV
is read by the one strict RIFF reader, `model_adapters.media.wav.decode_wav`
(re-exported here with `pcm16_to_float`). Whatever does not decode raises
`MediaError` (`model_adapters.media.errors`), which adapters turn into
`MalformedResponse`. `finish_voice` normalises loudness as the local voice does.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct

import numpy as np
from PIL import Image

from model_adapters.media.errors import MediaError
from model_adapters.media.wav import decode_wav, pcm16_to_float
from model_adapters.received import describe_received, error_text
from model_adapters.types import ImageResult, VoiceRequest, VoiceResult, WordTiming
from model_adapters.voice_delivery import deliver_voice

MAX_IMAGE_PIXELS = 8192 * 8192

# `decode_wav`, `pcm16_to_float` and `MediaError` live in model_adapters.media; the HTTP adapters import them from here.
__all__ = [
    "MAX_IMAGE_PIXELS",
    "MediaError",
    "decode_base64",
    "decode_data_uri",
    "decode_wav",
    "finish_voice",
    "fit_png",
    "open_image",
    "pcm16_to_float",
]


# --- images ---------------------------------------------------------------------------


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully (verify, then load); MediaError if they do not."""
    if not data:
        raise MediaError("empty image body")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"image of {probe.width}x{probe.height} is over {MAX_IMAGE_PIXELS} pixels")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        raise MediaError(f"image does not decode ({error_text(exc)}); {describe_received(data)}") from None
    return image


def fit_png(data: bytes, width: int, height: int) -> ImageResult:
    """The image as a PNG of exactly width x height.

    A PNG of the right size is returned byte for byte. Anything else (another
    size, JPEG or WebP) is scaled to cover the target (Lanczos), centre
    cropped to it, and re-encoded as PNG. A large reduction (a 1080p still to
    a 144p video frame) first halves by whole factors (`reducing_gap`): a third
    of the time, within 2/255 of plain Lanczos.
    """
    image = open_image(data)
    if image.format == "PNG" and image.size == (width, height):
        return ImageResult(png=data, width=width, height=height)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if image.size != (width, height):
        scale = max(width / image.width, height / image.height)
        scaled = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
        image = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ImageResult(png=buffer.getvalue(), width=width, height=height)


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{what} is not valid base64") from None


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise MediaError("malformed data: URI")
    if header.endswith(";base64"):
        return decode_base64(payload, "data: URI payload")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


# --- audio ----------------------------------------------------------------------------


def finish_voice(samples: np.ndarray, sample_rate: int, words: tuple[WordTiming, ...], request: VoiceRequest) -> VoiceResult:
    """Normalise, encode and measure as every voice does (model_adapters/voice_delivery.py)."""
    return deliver_voice(samples, sample_rate, words, request)
