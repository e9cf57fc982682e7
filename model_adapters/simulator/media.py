"""The simulator's synthesised media: PNGs drawn from a prompt's hash, speech (spoken English or
tone bursts) with per-character timings, the refined still ComfyUI answers, fal compose's MP4, and
the malformed variants the ``malformed`` fault serves (a PNG that does not decode, a WAV with a
wrong header, an MP4 cut in half). Bytes only: no HTTP, no settings."""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from model_adapters.media.wav import decode_pcm16_wav, encode_wav, to_pcm16

if TYPE_CHECKING:
    from av.audio.stream import AudioStream

COMPOSE_FPS = 30
# Sample rates FFmpeg's AAC encoder takes; any other rate is resampled to 48 kHz.
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
_AAC_FRAME = 1024


# --- images -----------------------------------------------------------------------------


def render_png(prompt: str, width: int, height: int, seed: int = 0) -> bytes:
    """A deterministic picture of the prompt's hash: a two-colour gradient and three soft discs."""
    digest = hashlib.sha256(f"{seed}|{prompt}".encode()).digest()
    colors = [np.array(list(digest[i : i + 3]), dtype=np.float32) for i in (0, 3, 6, 9)]
    angle = digest[12] / 255.0 * 2.0 * math.pi
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    image = colors[0] * (1.0 - ramp)[..., None] + colors[1] * ramp[..., None]
    short = float(min(width, height))
    for k in range(3):
        cx, cy = digest[13 + 3 * k] / 255.0 * width, digest[14 + 3 * k] / 255.0 * height
        radius = (0.12 + digest[15 + 3 * k] / 255.0 * 0.25) * short
        distance = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        mask = np.clip((radius - distance) / max(2.0, 0.02 * short), 0.0, 1.0)[..., None] * 0.85
        image = image * (1.0 - mask) + colors[2 + k % 2] * mask
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def broken_png(width: int, height: int) -> bytes:
    """A PNG signature and header, then image data that does not decode (and a wrong CRC)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    garbage = hashlib.sha256(b"broken").digest() * 4
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", garbage, crc=0) + _png_chunk(b"IEND", b"")


def refined_png(source: bytes, width: int, height: int) -> bytes:
    """The uploaded image cropped and scaled to width x height, slightly warmed."""
    image = Image.open(io.BytesIO(source)).convert("RGB")
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
    image = image.resize(scaled, Image.Resampling.BICUBIC)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32)
    pixels = np.clip(pixels * np.array([1.04, 1.0, 0.96], dtype=np.float32), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- speech -----------------------------------------------------------------------------


def encode_wav16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float samples (full scale 1.0) as a mono 16-bit WAV."""
    return encode_wav(to_pcm16(samples), sample_rate)


def bad_wav(wav: bytes) -> bytes:
    """The same WAV with a wrong RIFF id."""
    return b"RIFX" + wav[4:]


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # float32 mono
    sample_rate: int
    characters: list[str]
    starts: list[float]
    ends: list[float]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


_LEAD_S, _TAIL_S = 0.15, 0.2


def _pause_after(word: str) -> float:
    if word[-1] in ".!?":
        return 0.4
    if word[-1] in ",;:":
        return 0.25
    return 0.07


def synth_speech(text: str, sample_rate: int, seconds_per_letter: float = 0.06) -> Speech:
    """Speech-like audio: per word, one harmonic tone burst per ~3 letters, pitch from
    the word's hash; silences between words, longer after punctuation. Each
    character's time span follows the audio (whitespace spans the pauses)."""
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    spans: list[tuple[float, float]] = []
    t = _LEAD_S
    for index, (_, _, word) in enumerate(words):
        letters = max(1, sum(c.isalnum() for c in word))
        duration = max(0.12, letters * seconds_per_letter)
        spans.append((t, t + duration))
        t += duration + (_pause_after(word) if index + 1 < len(words) else 0.0)
    total = t + _TAIL_S
    samples = np.zeros(int(round(total * sample_rate)), dtype=np.float64)
    for (_, _, word), (start, end) in zip(words, spans, strict=False):
        _burst_word(samples, sample_rate, word, start, end)

    starts = [0.0] * len(text)
    ends = [0.0] * len(text)
    cursor_char, cursor_time = 0, 0.0
    for (first, last, _), (start, end) in zip(words, spans, strict=False):
        _spread(starts, ends, cursor_char, first, cursor_time, start)  # whitespace before the word
        _spread(starts, ends, first, last, start, end)
        cursor_char, cursor_time = last, end
    _spread(starts, ends, cursor_char, len(text), cursor_time, total)
    return Speech(samples.astype(np.float32), sample_rate, list(text), starts, ends)


def spoken_speech(text: str, sample_rate: int, speed: float = 1.0) -> Speech:
    """Intelligible English speech for the speech endpoints: the Piper voice (en-US, paced by
    `speed`; one per process), resampled to `sample_rate`, each character's time span from its
    word timings."""
    import asyncio

    from model_adapters.types import VoiceRequest

    result = asyncio.run(
        _piper_voice().synthesize(VoiceRequest(text=text, locale="en-US", voice="default", speed=min(1.15, max(0.85, speed))))
    )
    pcm, _ = decode_pcm16_wav(result.wav)
    if result.sample_rate != sample_rate:
        times = np.arange(round(len(pcm) * sample_rate / result.sample_rate)) / sample_rate
        pcm = np.interp(times, np.arange(len(pcm)) / result.sample_rate, pcm).astype(np.float32)
    total = len(pcm) / sample_rate
    starts, ends = [0.0] * len(text), [0.0] * len(text)
    cursor_char, cursor_time = 0, 0.0
    for match, word in zip(re.finditer(r"\S+", text), result.words, strict=False):
        _spread(starts, ends, cursor_char, match.start(), cursor_time, word.start_s)
        _spread(starts, ends, match.start(), match.end(), word.start_s, max(word.end_s, word.start_s))
        cursor_char, cursor_time = match.end(), max(word.end_s, word.start_s)
    _spread(starts, ends, cursor_char, len(text), cursor_time, total)
    return Speech(pcm, sample_rate, list(text), starts, ends)


_PIPER: list[Any] = []
_PIPER_LOCK = threading.Lock()


def _piper_voice() -> Any:
    with _PIPER_LOCK:
        if not _PIPER:
            from model_adapters.local_piper import PiperVoiceAdapter  # imported when a voice is asked for

            _PIPER.append(PiperVoiceAdapter(adapter_id="simulator-voice"))
        return _PIPER[0]


def _spread(starts: list[float], ends: list[float], first: int, last: int, t0: float, t1: float) -> None:
    count = last - first
    for i in range(count):
        starts[first + i] = round(t0 + (t1 - t0) * i / count, 4)
        ends[first + i] = round(t0 + (t1 - t0) * (i + 1) / count, 4)


def _burst_word(samples: np.ndarray, sample_rate: int, word: str, start: float, end: float) -> None:
    letters = max(1, sum(c.isalnum() for c in word))
    syllables = max(1, round(letters / 3))
    f0 = 110.0 + int(hashlib.sha256(word.lower().encode()).hexdigest()[:4], 16) % 80
    syllable_s = (end - start) / syllables
    for j in range(syllables):
        first = int(round((start + j * syllable_s) * sample_rate))
        count = min(int(round(syllable_s * sample_rate)), len(samples) - first)
        if count <= 0:
            continue
        x = np.arange(count) / sample_rate
        envelope = np.sin(np.pi * np.arange(count) / count) ** 0.6
        pitch = f0 * (1.0 + 0.04 * j) * (1.0 + 0.03 * np.sin(2 * np.pi * 4.0 * x))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        samples[first : first + count] += 0.25 * envelope * voice


# --- video ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeInput:
    """A compose job's decoded inputs: the still (RGB), the audio (float32 planar) and the timeline."""

    rgb: np.ndarray  # (height, width, 3) uint8
    video_s: float  # the image keyframe's duration
    pcm: np.ndarray | None  # (channels, samples) float32, already trimmed to its keyframe
    sample_rate: int
    png: bytes  # the still as PNG (the thumbnail)


def encode_compose_mp4(spec: ComposeInput, fps: int = COMPOSE_FPS) -> bytes:
    """The still held for ``spec.video_s`` at `fps` (libx264 ultrafast, yuv420p; one
    frame converted once and sent again and again) plus the audio as AAC, moov first."""
    import tempfile
    from fractions import Fraction

    import av

    height, width = spec.rgb.shape[:2]
    n_frames = max(1, round(spec.video_s * fps))
    with tempfile.TemporaryDirectory(prefix="sim-compose-") as folder:
        path = f"{folder}/out.mp4"  # a file, not BytesIO: +faststart rereads what it wrote
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.time_base = Fraction(1, fps)
            video.options = {"preset": "ultrafast", "crf": "28"}
            video.codec_context.thread_count = 1
            audio = None
            if spec.pcm is not None:
                audio = out.add_stream("aac", rate=spec.sample_rate, layout="mono" if len(spec.pcm) == 1 else "stereo")
            audio_packets: list[Any] = []
            audio_errors: list[BaseException] = []

            def encode_audio(stream: AudioStream, pcm: np.ndarray) -> None:  # beside the video: both encoders release the GIL
                try:
                    for start in range(0, pcm.shape[1], _AAC_FRAME):
                        chunk = np.ascontiguousarray(pcm[:, start : start + _AAC_FRAME])
                        audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.layout.name)
                        audio_frame.sample_rate, audio_frame.pts = spec.sample_rate, start
                        audio_frame.time_base = Fraction(1, spec.sample_rate)
                        audio_packets.extend(stream.encode(audio_frame))
                    audio_packets.extend(stream.encode(None))
                except BaseException as exc:  # re-raised below
                    audio_errors.append(exc)

            audio_thread = None
            if audio is not None and spec.pcm is not None:  # set together above
                audio.bit_rate = 32000 * len(spec.pcm)  # a simulator: small and fast
                audio.codec_context.options = {"aac_coder": "fast"}
                audio.codec_context.open()
                audio_thread = threading.Thread(target=encode_audio, args=(audio, spec.pcm), name="sim-compose-audio", daemon=True)
                audio_thread.start()
            packets = []
            frame = av.VideoFrame.from_ndarray(spec.rgb, format="rgb24").reformat(format="yuv420p")
            for index in range(n_frames):
                frame.pts = index
                frame.time_base = video.time_base
                packets.extend(video.encode(frame))
            packets.extend(video.encode(None))
            if audio_thread is not None:
                audio_thread.join()
                if audio_errors:
                    raise audio_errors[0]
                packets.extend(audio_packets)
            packets.sort(key=lambda p: (p.pts if p.pts is not None else 0) * p.time_base)
            for packet in packets:
                out.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()


def broken_mp4(mp4: bytes) -> bytes:
    """The MP4 cut in the middle of its media: the header parses, the frames do not all decode."""
    return mp4[: max(64, len(mp4) // 2)]
