"""WAV and 16-bit PCM: the one RIFF/WAVE reader and the one encoder, shared by voices, checks and adapters.

The reader walks the RIFF chunks strictly and accepts what providers stream:
placeholder chunk sizes (a data chunk running past the end is read to the
end), PCM 8/16/24/32-bit, float 32/64 and WAVE_FORMAT_EXTENSIBLE. Three
entry points on that one walk, for three contracts:

- `decode_wav`: float64 mono, strict (a plausible rate, samples, all finite):
  what a provider's reply must be.
- `read_wav`: float64 mono, as the file says (any rate, possibly empty): what
  the asset checks measure.
- `decode_pcm16_wav`: float32 mono, 16-bit PCM only: what the local models
  and the video's duration read.

Whatever does not decode raises `MediaError` (a ValueError). The encoder
writes mono 16-bit WAV.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np

from model_adapters.media.errors import MediaError
from model_adapters.received import describe_received

PCM16_SCALE = 32768.0  # full scale of 16-bit PCM, both ways

WAVE_FORMAT_PCM, WAVE_FORMAT_FLOAT, WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
MIN_RATE, MAX_RATE = 4000, 384000  # what a provider's voice can plausibly be sampled at


@dataclass(frozen=True)
class WavFormat:
    """The fmt chunk: format tag (the sub-format of an extensible WAV), channels, rate, bits per sample."""

    tag: int
    channels: int
    rate: int
    bits: int


# --- encoding -----------------------------------------------------------------------------


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples (full scale 1.0) to 16-bit PCM, rounding, clipping only past full scale."""
    scaled = np.round(np.asarray(samples, dtype=np.float64) * PCM16_SCALE)
    return np.clip(scaled, -32768, 32767).astype("<i2")


def encode_wav(pcm16: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16.astype("<i2").tobytes())
    return buffer.getvalue()


def pcm16_to_float(raw: bytes) -> np.ndarray:
    """Headerless little-endian 16-bit mono PCM -> float64 samples."""
    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.float64) / PCM16_SCALE


# --- decoding -----------------------------------------------------------------------------


def wav_chunks(data: bytes) -> tuple[WavFormat, bytes]:
    """(the fmt chunk, the data chunk's bytes) of a RIFF/WAVE file; MediaError if it has not both."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"not a RIFF/WAVE file (bad header); {describe_received(data)}")
    fmt: WavFormat | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        body_start = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body_start + 16 > len(data):
                raise MediaError("WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body_start : body_start + 16])
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack("<H", data[body_start + 24 : body_start + 26])
            fmt = WavFormat(tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise MediaError("WAV data chunk comes before its fmt chunk")
            return fmt, data[body_start : min(len(data), body_start + size)]
        offset = body_start + size + (size & 1)
    raise MediaError("WAV has no data chunk" if fmt else "WAV has no fmt chunk")


def mono_samples(payload: bytes, fmt: WavFormat) -> np.ndarray:
    """The data chunk's samples as float64 in [-1, 1], channels averaged; a trailing partial frame is dropped."""
    if fmt.channels < 1:
        raise MediaError(f"WAV header says {fmt.channels} channels")
    frame = fmt.bits // 8 * fmt.channels
    raw = payload[: len(payload) - len(payload) % frame] if frame else b""
    if fmt.tag == WAVE_FORMAT_PCM and fmt.bits in (8, 16, 24, 32):
        if fmt.bits == 8:
            samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
        elif fmt.bits == 24:
            bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
            ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
            samples = ints.astype(np.float64) / float(1 << 23)
        else:
            dtype = "<i2" if fmt.bits == 16 else "<i4"
            samples = np.frombuffer(raw, dtype=dtype).astype(np.float64) / float(1 << (fmt.bits - 1))
    elif fmt.tag == WAVE_FORMAT_FLOAT and fmt.bits in (32, 64):
        samples = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float64)
    else:
        raise MediaError(f"unsupported WAV encoding (format tag {fmt.tag}, {fmt.bits} bits)")
    mono: np.ndarray = samples.reshape(-1, fmt.channels).mean(axis=1)
    return mono


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(float64 mono samples in [-1, 1], sample rate) from a RIFF/WAVE file, strictly.

    Accepts PCM 8/16/24/32-bit and float 32/64, any channel count (averaged to
    mono). A data chunk whose size runs past the end (streamed WAVs write a
    placeholder size) is read to the end. MediaError on anything else, on an
    implausible rate, on no samples and on non-finite samples.
    """
    fmt, payload = wav_chunks(data)
    if fmt.channels < 1 or not MIN_RATE <= fmt.rate <= MAX_RATE:
        raise MediaError(f"WAV header says {fmt.channels} channels at {fmt.rate} Hz")
    samples = mono_samples(payload, fmt)
    if len(samples) == 0:
        raise MediaError("WAV has no audio samples")
    if not np.all(np.isfinite(samples)):
        raise MediaError("WAV has non-finite samples")
    return samples, fmt.rate


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(float64 mono samples, sample rate) as the file declares them: any rate, possibly no samples.

    MediaError when it is not a WAV of a supported encoding.
    """
    fmt, payload = wav_chunks(data)
    return mono_samples(payload, fmt), fmt.rate


def decode_pcm16_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV (any rate; channels are averaged) as float32 mono samples in [-1, 1) and its rate."""
    fmt, payload = wav_chunks(data)
    if fmt.tag != WAVE_FORMAT_PCM or fmt.bits != 16:
        kind = "float" if fmt.tag == WAVE_FORMAT_FLOAT else f"format tag {fmt.tag}"
        raise MediaError(f"expected 16-bit PCM, got {fmt.bits}-bit samples" + ("" if fmt.tag == WAVE_FORMAT_PCM else f" ({kind})"))
    return mono_samples(payload, fmt).astype(np.float32), fmt.rate
