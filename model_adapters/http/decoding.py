"""Provider media bytes -> checked task results: images, base64 and ``data:`` URIs, WAV and raw PCM.

Images are verified with Pillow and fitted to the requested size; WAV
headers are parsed strictly (the RIFF walk accepts what providers stream:
placeholder chunk sizes, 8/16/24/32-bit PCM, float, WAVE_FORMAT_EXTENSIBLE).
Whatever does not decode raises `MediaError`, which adapters turn into
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

from model_adapters import loudness
from model_adapters.pcm import PCM16_SCALE, encode_wav, to_pcm16
from model_adapters.received import describe_received, error_text
from model_adapters.types import ImageResult, VoiceRequest, VoiceResult, WordTiming

MAX_IMAGE_PIXELS = 8192 * 8192


class MediaError(ValueError):
    """Media bytes that do not decode (converted to MalformedResponse by adapters)."""


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
    cropped to it, and re-encoded as PNG.
    """
    image = open_image(data)
    if image.format == "PNG" and image.size == (width, height):
        return ImageResult(png=data, width=width, height=height)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if image.size != (width, height):
        scale = max(width / image.width, height / image.height)
        scaled = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
        image = image.resize(scaled, Image.Resampling.LANCZOS)
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

_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(float64 mono samples in [-1, 1], sample rate) from a RIFF/WAVE file.

    Accepts PCM 8/16/24/32-bit and float 32/64, any channel count (averaged to
    mono). A data chunk whose size runs past the end (streamed WAVs write a
    placeholder size) is read to the end. MediaError on anything else.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"not a RIFF/WAVE file (bad header); {describe_received(data)}")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        body_start = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body_start + 16 > len(data):
                raise MediaError("WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body_start : body_start + 16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack("<H", data[body_start + 24 : body_start + 26])
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise MediaError("WAV data chunk comes before its fmt chunk")
            payload = data[body_start : min(len(data), body_start + size)]
            return _wav_samples(payload, *fmt)
        offset = body_start + size + (size & 1)
    raise MediaError("WAV has no data chunk" if fmt else "WAV has no fmt chunk")


def _wav_samples(payload: bytes, tag: int, channels: int, rate: int, bits: int) -> tuple[np.ndarray, int]:
    if channels < 1 or not 4000 <= rate <= 384000:
        raise MediaError(f"WAV header says {channels} channels at {rate} Hz")
    width = bits // 8
    if tag == _WAVE_FORMAT_PCM and bits in (8, 16, 24, 32):
        frame = width * channels
        raw = payload[: len(payload) - len(payload) % frame]
        if bits == 8:
            samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
        elif bits == 24:
            bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
            ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
            samples = ints.astype(np.float64) / float(1 << 23)
        else:
            dtype = "<i2" if bits == 16 else "<i4"
            samples = np.frombuffer(raw, dtype=dtype).astype(np.float64) / float(1 << (bits - 1))
    elif tag == _WAVE_FORMAT_FLOAT and bits in (32, 64):
        frame = width * channels
        raw = payload[: len(payload) - len(payload) % frame]
        samples = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
    else:
        raise MediaError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    if len(samples) < channels:
        raise MediaError("WAV has no audio samples")
    if not np.all(np.isfinite(samples)):
        raise MediaError("WAV has non-finite samples")
    return samples.reshape(-1, channels).mean(axis=1), rate


def pcm16_to_float(raw: bytes) -> np.ndarray:
    """Headerless little-endian 16-bit mono PCM -> float64 samples."""
    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.float64) / PCM16_SCALE


def finish_voice(
    samples: np.ndarray, sample_rate: int, words: tuple[WordTiming, ...], request: VoiceRequest
) -> VoiceResult:
    """Normalise to the request's loudness and true-peak ceiling, encode 16-bit WAV,
    and report what the delivered samples measure (as the local voice does)."""
    normalized, _, _ = loudness.normalize(
        samples, sample_rate, target_lufs=request.target_lufs, true_peak_dbtp=request.true_peak_dbtp
    )
    pcm16 = to_pcm16(normalized)
    lufs, peak_dbtp = loudness.measure(pcm16.astype(np.float64) / PCM16_SCALE, sample_rate)
    return VoiceResult(
        wav=encode_wav(pcm16, sample_rate),
        sample_rate=sample_rate,
        duration_s=len(pcm16) / sample_rate,
        words=words,
        loudness_lufs=lufs,
        true_peak_dbtp=peak_dbtp,
        characters=len(request.text),
    )
