"""Stream durations and frame count of an MP4, as its container declares them (PyAV; no torch)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class StreamFacts:
    video_duration_s: float
    audio_duration_s: float
    duration_s: float
    video_frames: int


def probe_mp4(path_or_bytes: str | bytes) -> StreamFacts:
    """Stream durations as the container declares them (what players and the tests read)."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with av.open(source, mode="r") as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        v_dur = float(v.duration * v.time_base) if v.duration and v.time_base else 0.0
        a_dur = float(a.duration * a.time_base) if a.duration and a.time_base else 0.0
        total = container.duration / av.time_base if container.duration else max(v_dur, a_dur)
        return StreamFacts(v_dur, a_dur, total, v.frames)
