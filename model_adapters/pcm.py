"""16-bit PCM and WAV encoding and decoding shared by every voice adapter and the simulator."""

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


def decode_wav(wav: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV (any rate; channels are averaged) as float32 mono samples in [-1, 1) and its rate."""
    try:
        with wave.open(io.BytesIO(wav), "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable PCM WAV: {exc}") from exc
    if width != 2:
        raise ValueError(f"expected 16-bit PCM, got {8 * width}-bit samples")
    samples = np.frombuffer(frames[: len(frames) - len(frames) % (2 * channels)], dtype="<i2")
    audio = samples.astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return audio, rate
