"""The request body of fal's ``fal-ai/ffmpeg-api/compose``: validated (400 naming the field, 422
for what is not simulated) and its base64 ``data:`` URIs decoded into a `ComposeInput`."""

from __future__ import annotations

import base64
import io
import math
import re
from typing import Any

import numpy as np
from PIL import Image

from model_adapters.simulator.calls import BadRequest
from model_adapters.simulator.media import AAC_RATES, ComposeInput

FAL_COMPOSE_MODEL = "fal-ai/ffmpeg-api/compose"
COMPOSE_MAX_S = 600.0
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*);base64,(?P<payload>.*)", re.S)


def _compose_data(url: Any, where: str) -> bytes:
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.url is required")
    if not url.startswith("data:"):
        raise BadRequest(f"{where}.url: only base64 data: URIs are simulated, got {url[:40]!r}", status=422, code="unsupported_url")
    match = _DATA_URI.fullmatch(url)
    if not match:
        raise BadRequest(f"{where}.url is not a base64 data: URI (data:<type>;base64,<payload>)", code="invalid_data_uri")
    try:
        data = base64.b64decode(match.group("payload"), validate=True)
    except (ValueError, TypeError):
        raise BadRequest(f"{where}.url: the data: URI payload is not valid base64", code="invalid_data_uri") from None
    if not data:
        raise BadRequest(f"{where}.url: the data: URI is empty", code="invalid_data_uri")
    return data


def _milliseconds(value: object, where: str) -> float:
    """A keyframe's time field: a finite number of milliseconds >= 0 (BadRequest otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"{where} must be a number of milliseconds >= 0, got {value!r}")
    return value


def _compose_keyframe(track: dict[str, Any], where: str) -> tuple[dict[str, Any], float, float]:
    keyframes = track.get("keyframes")
    if not isinstance(keyframes, list) or not keyframes:
        raise BadRequest(f"{where}.keyframes must be a non-empty list")
    if len(keyframes) > 1:
        raise BadRequest(f"{where}: only one keyframe per track is simulated", status=422, code="unsupported")
    keyframe = keyframes[0]
    if not isinstance(keyframe, dict):
        raise BadRequest(f"{where}.keyframes[0] must be an object")
    timestamp = _milliseconds(keyframe.get("timestamp", 0), f"{where}.keyframes[0].timestamp")
    duration = _milliseconds(keyframe.get("duration"), f"{where}.keyframes[0].duration")
    if timestamp != 0:
        raise BadRequest(f"{where}.keyframes[0]: only timestamp 0 is simulated", status=422, code="unsupported")
    if not 0 < duration <= COMPOSE_MAX_S * 1000:
        raise BadRequest(f"{where}.keyframes[0].duration must be in (0, {COMPOSE_MAX_S * 1000:g}] ms, got {duration!r}")
    return keyframe, float(timestamp) / 1000.0, float(duration) / 1000.0


def _compose_still(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > 4096 * 4096:
                raise BadRequest(f"{where}: image of {image.width}x{image.height} is too large", status=422)
            rgb = np.asarray(image.convert("RGB"))
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
        raise BadRequest(f"{where}.url: the image does not decode ({type(exc).__name__})", code="invalid_image") from None
    height, width = rgb.shape[:2]
    if width % 2 or height % 2 or not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise BadRequest(
            f"{where}: image is {width}x{height}; H.264 (yuv420p) needs even sides in 16..4096",
            status=422,
            code="unsupported_size",
        )
    return rgb


def _compose_audio(data: bytes, duration_s: float, where: str) -> tuple[np.ndarray, int]:
    """Decode any audio FFmpeg reads to float32 planar, mono or stereo, trimmed to `duration_s`."""
    import av  # lazily: the simulator imports without PyAV's start-up cost

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise BadRequest(f"{where}.url: no audio stream", code="invalid_audio")
            stream = container.streams.audio[0]
            rate = stream.rate if stream.rate in AAC_RATES else 48000
            layout = "mono" if stream.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
    except BadRequest:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise BadRequest(f"{where}.url: the audio does not decode ({exc})", code="invalid_audio") from None
    if not chunks:
        raise BadRequest(f"{where}.url: the audio has no samples", code="invalid_audio")
    pcm = np.ascontiguousarray(np.concatenate(chunks, axis=1)[:, : max(1, round(duration_s * rate))], np.float32)
    return pcm, rate


def compose_input(body: dict[str, Any], size_override: tuple[int, int] | None = None) -> ComposeInput:
    """Validate a compose body (one video track whose keyframe is an image, at most one
    audio track) and decode its data: URIs; BadRequest says what is wrong."""
    tracks = body.get("tracks")
    if not isinstance(tracks, list) or not tracks:
        raise BadRequest("tracks must be a non-empty list of {id, type, keyframes}")
    video: tuple[dict[str, Any], float, float, str] | None = None
    audio: tuple[dict[str, Any], float, float, str] | None = None
    for index, track in enumerate(tracks):
        where = f"tracks[{index}]"
        if not isinstance(track, dict):
            raise BadRequest(f"{where} must be an object")
        kind = track.get("type")
        if kind not in ("video", "audio"):
            raise BadRequest(f"{where}.type must be 'video' or 'audio', got {kind!r}")
        if (video if kind == "video" else audio) is not None:
            raise BadRequest(f"{where}: only one {kind} track is simulated", status=422, code="unsupported")
        keyframe, start, duration = _compose_keyframe(track, where)
        if kind == "video":
            video = (keyframe, start, duration, where)
        else:
            audio = (keyframe, start, duration, where)
    if video is None:
        raise BadRequest("tracks: a video track (its keyframe an image) is required")
    keyframe, _, video_s, where = video
    rgb = _compose_still(_compose_data(keyframe.get("url"), f"{where}.keyframes[0]"), where)
    if size_override and (rgb.shape[1], rgb.shape[0]) != tuple(size_override):
        resized = Image.fromarray(rgb).resize(size_override, Image.Resampling.BILINEAR)
        rgb = np.asarray(resized)
    png_buffer = io.BytesIO()
    Image.fromarray(rgb).save(png_buffer, format="PNG", compress_level=1)
    pcm, rate = None, 48000
    if audio is not None:
        keyframe, _, audio_s, where = audio
        pcm, rate = _compose_audio(_compose_data(keyframe.get("url"), f"{where}.keyframes[0]"), audio_s, where)
    return ComposeInput(rgb=rgb, video_s=video_s, pcm=pcm, sample_rate=rate, png=png_buffer.getvalue())
