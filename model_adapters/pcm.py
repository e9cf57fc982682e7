"""16-bit PCM and WAV encoding shared by every voice adapter and the simulator."""

import io
import wave

import numpy as np

PCM16_SCALE = 32768.0  # full scale of 16-bit PCM, both ways


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
