"""What every voice adapter delivers, local or hosted: the speech normalised to the request's
loudness and true-peak ceiling (model_adapters/loudness.py), encoded as 16-bit PCM WAV, with
what the delivered 16-bit samples measure (not the float ones before rounding)."""

from __future__ import annotations

import numpy as np

from model_adapters import loudness
from model_adapters.media.wav import PCM16_SCALE, encode_wav, to_pcm16
from model_adapters.types import VoiceRequest, VoiceResult, WordTiming


def deliver_voice(
    samples: np.ndarray, sample_rate: int, words: tuple[WordTiming, ...] | list[WordTiming], request: VoiceRequest
) -> VoiceResult:
    """`samples`: mono float speech in [-1, 1]; `words`: their timings (gain and limiting move nothing)."""
    normalized, _, _ = loudness.normalize(samples, sample_rate, target_lufs=request.target_lufs, true_peak_dbtp=request.true_peak_dbtp)
    pcm16 = to_pcm16(normalized)
    lufs, peak_dbtp = loudness.measure(pcm16.astype(np.float32) / PCM16_SCALE, sample_rate)
    return VoiceResult(
        wav=encode_wav(pcm16, sample_rate),
        sample_rate=sample_rate,
        duration_s=len(pcm16) / sample_rate,
        words=tuple(words),
        loudness_lufs=lufs,
        true_peak_dbtp=peak_dbtp,
        characters=len(request.text),
    )
