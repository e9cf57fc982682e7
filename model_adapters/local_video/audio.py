"""The voiceover: decoded and resampled to 48 kHz stereo, measured, and cut into AAC-sized frames (PyAV; no torch)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from model_adapters.media.wav import decode_pcm16_wav

AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"  # a mono voice is duplicated, see decode_audio
AUDIO_BITRATE = 128_000
AAC_FRAME = 1024


def decode_audio(wav: bytes) -> tuple[np.ndarray, int, float]:
    """WAV (or anything FFmpeg reads) to float32 (2, samples) at AUDIO_RATE, plus the input's
    sample rate and exact duration.

    A mono voice goes to both channels at its own level (swresample's mono -> stereo
    matrix would lower it by 3 dB and undo the voice stage's loudness normalisation);
    stereo stays stereo; more channels are downmixed by swresample.
    """
    try:
        with av.open(io.BytesIO(wav), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            in_rate = stream.codec_context.sample_rate
            mono = stream.codec_context.channels == 1
            resampler = av.AudioResampler(format="fltp", layout="mono" if mono else "stereo", rate=AUDIO_RATE)
            chunks: list[np.ndarray] = []
            in_samples = 0
            for frame in container.decode(stream):
                in_samples += frame.samples
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"voiceover is not readable audio: {exc}") from exc
    if in_samples == 0 or not in_rate:
        raise ValueError("voiceover has no samples")
    pcm = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if pcm.shape[0] == 1:
        pcm = np.repeat(pcm, 2, axis=0)
    return pcm, in_rate, in_samples / in_rate


def voice_duration(wav: bytes) -> float:
    """The voiceover's length in seconds: its sample count when it is 16-bit PCM WAV (what the
    voice stage writes; no resampling), else by decoding it with FFmpeg."""
    try:
        samples, rate = decode_pcm16_wav(wav)
        if len(samples) > 0 and rate > 0:
            return len(samples) / rate
    except ValueError:
        pass
    return decode_audio(wav)[2]


def audio_frames(pcm: np.ndarray, total_samples: int) -> Iterator[av.AudioFrame]:
    """AAC-sized frames of ``pcm`` padded with silence (or trimmed) to ``total_samples``."""
    channels = pcm.shape[0]
    if pcm.shape[1] < total_samples:
        pcm = np.concatenate([pcm, np.zeros((channels, total_samples - pcm.shape[1]), np.float32)], axis=1)
    pcm = pcm[:, :total_samples]
    for start in range(0, total_samples, AAC_FRAME):
        chunk = np.ascontiguousarray(pcm[:, start : start + AAC_FRAME])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=AUDIO_LAYOUT)
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame
