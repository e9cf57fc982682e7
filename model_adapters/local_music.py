"""`local-music-bed`: a soft instrumental bed, synthesized with numpy (no model, no download).

The worked example of adding a routed stage (docs/stages.md): a pad of
slowly changing chords in a key picked from the brand palette, a tempo from
the brief's tone, seeded per variant, faded in and out and normalised to
-23 LUFS (the mixer sets its level under the voice). Deterministic: the same
request gives the same WAV bytes.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np

from model_adapters import loudness
from model_adapters.media.wav import encode_wav, to_pcm16
from model_adapters.tasks import MusicRequest, MusicResult
from model_adapters.types import AdapterInfo, Price

PROVIDER = "local"
MODEL = "numpy-pad"
BED_LUFS = -23.0
# Scale degrees (semitones above the key) of I - V - vi - IV, the pop progression.
PROGRESSION = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
ENERGETIC = ("energetic", "bold", "playful", "upbeat", "fun", "bright")


def tempo_bpm(mood: str) -> float:
    return 112.0 if any(word in mood.lower() for word in ENERGETIC) else 76.0


def key_hz(palette: tuple[str, ...], seed: int) -> float:
    """A root between A2 and G#3, picked from the palette and the seed."""
    digest = hashlib.sha256(("|".join(palette) + f"|{seed}").encode()).digest()
    return 110.0 * 2 ** ((digest[0] % 12) / 12)


def pad(request: MusicRequest) -> np.ndarray:
    """Float samples of the bed at `request.sample_rate`, exactly `duration_s` long."""
    rate = request.sample_rate
    n = int(round(request.duration_s * rate))
    t = np.arange(n) / rate
    bar_s = 4 * 60.0 / tempo_bpm(request.mood)
    root = key_hz(request.palette, request.seed)
    rng = np.random.default_rng(request.seed)
    detune = 1.0 + rng.uniform(-0.002, 0.002, size=3)
    out = np.zeros(n)
    chord_index = (t // (2 * bar_s)).astype(int) % len(PROGRESSION)  # two bars a chord
    for position, chord in enumerate(PROGRESSION):
        mask = chord_index == position
        if not mask.any():
            continue
        for voice, semitones in enumerate(chord):
            f = root * 2 ** (semitones / 12) * detune[voice]
            # A warm tone: the fundamental and two soft harmonics.
            tone = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) + 0.1 * np.sin(6 * np.pi * f * t)
            out[mask] += tone[mask]
    # Each chord swells in and out (no clicks at chord changes), then a fade at both ends.
    phase = (t % (2 * bar_s)) / (2 * bar_s)
    out *= 0.6 + 0.4 * np.sin(np.pi * phase)
    fade = np.minimum(1.0, np.minimum(t, request.duration_s - t) / 0.5)
    faded: np.ndarray = out * np.clip(fade, 0.0, 1.0)
    return faded


class LocalMusicBed:
    def __init__(self, adapter_id: str = "local-music-bed", max_concurrency: int = 2):
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="music",
            provider=PROVIDER,
            model=MODEL,
            model_version="1",
            price=Price(),
            capabilities=frozenset({"locale:any"}),
            max_concurrency=max_concurrency,
        )

    async def compose_music(self, request: MusicRequest) -> MusicResult:
        return await asyncio.to_thread(self._compose, request)

    def _compose(self, request: MusicRequest) -> MusicResult:
        samples, _, _ = loudness.normalize(pad(request), request.sample_rate, target_lufs=BED_LUFS, true_peak_dbtp=-3.0)
        pcm = to_pcm16(samples)
        return MusicResult(
            wav=encode_wav(pcm, request.sample_rate), sample_rate=request.sample_rate, duration_s=len(pcm) / request.sample_rate
        )

    async def aclose(self) -> None:
        return None
