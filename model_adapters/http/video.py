"""A hosted ``video`` adapter: fal's FFmpeg compose endpoint over fal's queue.

:class:`FalVideoCompose` (adapter kind ``fal-video-compose``) sends the refined
still and the voiceover to ``fal-ai/ffmpeg-api/compose`` through fal's queue
(`model_adapters.http.queue.FalQueue`: submit, poll the status with backoff,
fetch the result) and downloads the MP4 it answers.

Request body (fal's compose schema; times in milliseconds)::

    {"tracks": [
        {"id": "1", "type": "video",
         "keyframes": [{"url": <still>, "timestamp": 0, "duration": <video ms>}]},
        {"id": "2", "type": "audio",
         "keyframes": [{"url": <voice>, "timestamp": 0, "duration": <video ms>}]}]}

- The still is resized with Pillow to exactly ``request.width`` x
  ``request.height`` (scale to cover, centre crop; `fit_png`) and sent as a
  ``data:image/png;base64,...`` URI (fal takes base64 data URIs for file
  inputs), so the video comes out at the requested size.
- The voice goes as a ``data:audio/wav;base64,...`` URI: the caller's WAV, its
  samples untouched, with silence appended up to the video's length (the data
  chunk grows, nothing else changes). The video lasts
  ``audio_duration_s + tail_s`` (never less than the WAV itself); padding the
  audio to that length keeps the two streams within one frame of each other,
  which ``synced_video`` requires (a hosted compose ends an audio keyframe
  where its file ends).
- ``video_url`` is downloaded with `fetch_media` (base_url's origin and
  ``allowed_hosts`` only, size-capped); the thumbnail is not fetched.
- The MP4 is probed with PyAV in a worker thread: every packet of the first
  video and audio streams is decoded. It must have both streams, decode to
  as many frames as it declares, be exactly the requested size, have its
  audio and video within one frame of each other, and last at least as long as
  the voice. Anything else raises MalformedResponse (retryable: the router
  retries, then falls back), so a broken MP4 is never stored. An MP4 whose
  ``moov`` comes after ``mdat`` is remuxed (stream copy, ``+faststart``).
- Captions are not burned in by this provider (capability
  ``captions:sidecar``): the asset stores the WebVTT sidecar either way.

Price: fal bills this endpoint per compute second ($0.0002/s on fal's model
page at the time of writing), not per output second. Composing a still with
an audio track takes about as long as the clip or less, so the default
``Price(per_output_second=0.0002)`` (used only when the adapter is built
without a price; the routing config's price wins) is an upper-bound estimate
for the budget check.

Options: the poll options (``poll_interval_s``, ``poll_backoff``,
``poll_max_interval_s``), ``extra_input`` (a JSON object merged into the
body), and the common ones (``model_version``, ``max_media_bytes``,
``connect_timeout_s``, ``trust_env``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import os
import struct
import tempfile
from dataclasses import dataclass, replace
from typing import Any

import av
from pydantic import BaseModel, ConfigDict

from model_adapters.http.decoding import MediaError, decode_wav, fit_png
from model_adapters.http.options import POLL_OPTIONS
from model_adapters.http.queue import FalQueue
from model_adapters.received import describe_received, error_text
from model_adapters.types import Price, VideoRequest, VideoResult

MODEL = "fal-ai/ffmpeg-api/compose"
DEFAULT_PRICE = Price(per_output_second=0.0002)
MIN_SIDE, MAX_SIDE = 16, 4096
_TIME_SLACK_S = 1e-3  # container timestamps are rounded to their time base


class _ComposeResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    video_url: str
    thumbnail_url: str | None = None


# --- WAV padding -----------------------------------------------------------------------------


def pad_wav(wav: bytes, total_s: float) -> bytes:
    """The WAV with silence appended to its data chunk up to ``total_s`` (never shortened).

    Other chunks are kept as they are; the RIFF and data sizes are rewritten
    (a streamed WAV's placeholder data size is replaced by the real one).
    """
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise MediaError("not a RIFF/WAVE file (bad header)")
    chunks: list[tuple[bytes, bytes]] = []
    fmt: tuple[int, int, int, int] | None = None  # tag, channels, rate, block_align
    bits = 0
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id = wav[offset : offset + 4]
        (size,) = struct.unpack("<I", wav[offset + 4 : offset + 8])
        body = wav[offset + 8 : min(len(wav), offset + 8 + size)]
        if chunk_id == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = (tag, channels, rate, block_align)
        chunks.append((chunk_id, body))
        if chunk_id == b"data":
            break  # whatever follows a (possibly streamed) data chunk is dropped
        offset += 8 + size + (size & 1)
    if fmt is None or not any(chunk_id == b"data" for chunk_id, _ in chunks):
        raise MediaError("WAV lacks a fmt or a data chunk")
    _, channels, rate, block_align = fmt
    if block_align < 1 or rate < 1:
        raise MediaError(f"WAV header says block align {block_align} at {rate} Hz")
    out = bytearray()
    for chunk_id, body in chunks:
        if chunk_id == b"data":
            body = body[: len(body) - len(body) % block_align]
            missing = max(0, math.ceil(total_s * rate) - len(body) // block_align)
            silence = b"\x80" if bits == 8 else b"\x00"  # 8-bit PCM is unsigned
            body = body + silence * (missing * block_align)
        out += chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(out)) + b"WAVE" + bytes(out)


# --- MP4 probing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mp4Facts:
    """What the MP4 holds, measured by decoding it."""

    width: int
    height: int
    fps: float
    frames: int  # decoded
    declared_frames: int  # from the container; 0 when it declares none
    video_duration_s: float  # decoded frames, first pts to the end of the last frame
    audio_duration_s: float  # as declared (checked against the decoded samples), else decoded
    duration_s: float  # the container's, else the longer stream
    video_codec: str
    audio_codec: str
    audio_rate: int
    audio_channels: int
    faststart: bool


def top_level_boxes(data: bytes) -> list[str]:
    """The kinds of the MP4's top-level boxes, in order; MediaError when they do not parse."""
    kinds: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > len(data):
                raise MediaError("MP4 box header is truncated")
            size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif size == 0:
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise MediaError(f"MP4 box {kind!r} at byte {offset} runs past the end ({size} bytes)")
        kinds.append(kind.decode("latin-1"))
        offset += size
    return kinds


def probe_mp4(data: bytes) -> Mp4Facts:
    """Decode every packet of the first video and audio streams; MediaError if anything is off."""
    if not data:
        raise MediaError("empty MP4")
    kinds = top_level_boxes(data)
    if "moov" not in kinds or "mdat" not in kinds:
        raise MediaError(f"not an MP4 with moov and mdat (top-level boxes: {' '.join(kinds[:8]) or 'none'})")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video or not container.streams.audio:
                raise MediaError(
                    f"needs a video and an audio stream; has {len(container.streams.video)} video, {len(container.streams.audio)} audio"
                )
            video, audio = container.streams.video[0], container.streams.audio[0]
            video.thread_type = "AUTO"
            rate = video.average_rate or video.guessed_rate
            if not rate:
                raise MediaError("the video stream has no frame rate")
            if video.time_base is None or audio.time_base is None:  # PyAV's None for a 0/x time base
                raise MediaError("a stream of the MP4 has no time base")
            fps = float(rate)
            frames, samples = 0, 0
            first_pts: int | None = None
            last_pts = 0
            width = height = 0
            for frame in container.decode(video, audio):
                if isinstance(frame, av.VideoFrame):
                    frames += 1
                    width, height = frame.width, frame.height
                    if frame.pts is not None:
                        first_pts = frame.pts if first_pts is None else min(first_pts, frame.pts)
                        last_pts = max(last_pts, frame.pts)
                elif isinstance(frame, av.AudioFrame):  # the only other kind the two streams yield
                    samples += frame.samples
            audio_rate = audio.codec_context.sample_rate or audio.rate or 0
            decoded_audio_s = samples / audio_rate if audio_rate else 0.0
            # The declared length (what players and the asset checks read): decoding also
            # yields the encoder's padding of the last AAC frame.
            declared_audio_s = float(audio.duration * audio.time_base) if audio.duration else 0.0
            audio_frame_s = (audio.codec_context.frame_size or 1024) / audio_rate if audio_rate else 0.0
            facts = Mp4Facts(
                width=width,
                height=height,
                fps=fps,
                frames=frames,
                declared_frames=video.frames or 0,
                video_duration_s=(float((last_pts - first_pts) * video.time_base) + 1.0 / fps if first_pts is not None else frames / fps),
                audio_duration_s=declared_audio_s or decoded_audio_s,
                duration_s=0.0,
                video_codec=video.codec_context.name,
                audio_codec=audio.codec_context.name,
                audio_rate=audio_rate,
                audio_channels=audio.codec_context.channels,
                faststart=kinds.index("moov") < kinds.index("mdat"),
            )
            total = container.duration / av.time_base if container.duration else 0.0
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"MP4 does not decode ({error_text(exc)}); {describe_received(data)}") from None
    if facts.frames == 0:
        raise MediaError("MP4 has no decodable video frames")
    if facts.audio_duration_s <= 0:
        raise MediaError("MP4 has no decodable audio")
    if facts.declared_frames and facts.frames != facts.declared_frames:
        raise MediaError(f"MP4 declares {facts.declared_frames} frames but {facts.frames} decode")
    if declared_audio_s and decoded_audio_s < declared_audio_s - audio_frame_s - _TIME_SLACK_S:
        raise MediaError(f"MP4 declares {declared_audio_s:.3f} s of audio but {decoded_audio_s:.3f} s decode")
    return replace(facts, duration_s=total or max(facts.video_duration_s, facts.audio_duration_s))


def remux_faststart(data: bytes) -> bytes:
    """The same streams (packets copied, nothing re-encoded) with ``moov`` before ``mdat``."""
    with tempfile.TemporaryDirectory(prefix="fal-video-") as folder:
        path = os.path.join(folder, "faststart.mp4")  # +faststart rereads its output: a file, not BytesIO
        with (
            av.open(io.BytesIO(data), mode="r") as source,
            av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as target,
        ):
            streams = [source.streams.video[0], source.streams.audio[0]]
            mapping = {s.index: target.add_stream_from_template(s) for s in streams}
            for packet in source.demux(streams):
                if packet.dts is None:
                    continue
                packet.stream = mapping[packet.stream.index]
                target.mux(packet)
        with open(path, "rb") as handle:
            return handle.read()


# --- the adapter ------------------------------------------------------------------------------


class FalVideoCompose(FalQueue):
    """``video`` over fal's queue with ``fal-ai/ffmpeg-api/compose`` (see the module docstring)."""

    task = "video"
    default_model = MODEL
    capabilities = frozenset({"h264", "aac", "captions:sidecar", "size:any", "fit:cover-crop", "still+audio"})
    adapter_options = POLL_OPTIONS | {"extra_input"}

    def __init__(self, **kwargs: Any):
        if kwargs.get("price") is None:
            kwargs["price"] = DEFAULT_PRICE
        super().__init__(**kwargs)
        self.extra_input = self.options.json_object("extra_input")
        self._poll_schedule()  # validate the poll options now, not mid-run

    # -- the request --

    def prepare(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> tuple[dict[str, Any], float]:
        """(the compose body, the voice's own duration); ValueError naming what is wrong with the inputs."""
        for name, value in (("width", request.width), ("height", request.height)):
            if value % 2 or not MIN_SIDE <= value <= MAX_SIDE:
                raise ValueError(f"{self.adapter_id}: video {name} must be even and in [{MIN_SIDE}, {MAX_SIDE}], got {value}")
        if request.tail_s < 0 or request.audio_duration_s <= 0:
            raise ValueError(
                f"{self.adapter_id}: audio_duration_s must be > 0 and tail_s >= 0, got {request.audio_duration_s} and {request.tail_s}"
            )
        for name, data, expected in (("image", image_png, request.image_sha256), ("audio", audio_wav, request.audio_sha256)):
            if not data:
                raise ValueError(f"{self.adapter_id}: no {name} bytes were given (the request names {expected[:12]}…)")
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise ValueError(f"{self.adapter_id}: {name} bytes have sha256 {actual[:12]}…, the request names {expected[:12]}…")
        try:
            still = fit_png(image_png, request.width, request.height).png
        except MediaError as exc:
            raise ValueError(f"{self.adapter_id}: the image does not decode: {exc}") from None
        try:
            samples, rate = decode_wav(audio_wav)
            voice_s = len(samples) / rate
            video_s = max(request.audio_duration_s, voice_s) + request.tail_s
            wav = pad_wav(audio_wav, video_s)
        except MediaError as exc:
            raise ValueError(f"{self.adapter_id}: the audio is not a usable WAV: {exc}") from None
        video_ms = math.ceil(video_s * 1000 - 1e-6)
        body = {
            "tracks": [
                {
                    "id": "1",
                    "type": "video",
                    "keyframes": [{"url": _data_uri("image/png", still), "timestamp": 0, "duration": video_ms}],
                },
                {
                    "id": "2",
                    "type": "audio",
                    "keyframes": [{"url": _data_uri("audio/wav", wav), "timestamp": 0, "duration": video_ms}],
                },
            ]
        }
        return {**body, **self.extra_input}, voice_s

    # -- the task --

    async def compose(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> VideoResult:
        body, voice_s = await asyncio.to_thread(self.prepare, request, image_png, audio_wav)
        async with self._deadline(f"{self.provider} compose job"):
            result_reply, job = await self._fal_job(body)
            result = self._parse(_ComposeResult, self._json(result_reply), result_reply.endpoint)
            data = await self.fetch_media(result.video_url)
        return await asyncio.to_thread(self._result, request, data, voice_s, job)

    def _result(self, request: VideoRequest, data: bytes, voice_s: float, job: str) -> VideoResult:
        endpoint = "GET video_url"
        try:
            facts = probe_mp4(data)
        except MediaError as exc:
            raise self._malformed(endpoint, f"job {job}: {exc}") from None
        if (facts.width, facts.height) != (request.width, request.height):
            raise self._malformed(
                endpoint, f"job {job}: the video is {facts.width}x{facts.height}, the request is {request.width}x{request.height}"
            )
        frame_s = 1.0 / facts.fps
        drift = abs(facts.video_duration_s - facts.audio_duration_s)
        if drift > frame_s + _TIME_SLACK_S:
            raise self._malformed(
                endpoint,
                f"job {job}: audio ({facts.audio_duration_s:.3f} s) and video ({facts.video_duration_s:.3f} s) "
                f"differ by {drift * 1000:.1f} ms, more than one frame",
            )
        if min(facts.video_duration_s, facts.audio_duration_s) < voice_s - frame_s - _TIME_SLACK_S:
            raise self._malformed(endpoint, f"job {job}: the video lasts {facts.video_duration_s:.3f} s, the voice {voice_s:.3f} s")
        faststart = "provider"
        if not facts.faststart:
            try:
                data = remux_faststart(data)
            except (av.FFmpegError, ValueError, OSError) as exc:
                raise self._malformed(endpoint, f"job {job}: remuxing moov first failed: {exc}") from None
            faststart = "remuxed"
        return VideoResult(
            mp4=data,
            width=facts.width,
            height=facts.height,
            fps=round(facts.fps),
            duration_s=facts.duration_s,
            video_duration_s=facts.video_duration_s,
            audio_duration_s=facts.audio_duration_s,
            extras={
                "request_id": job,
                "frames": facts.frames,
                "fps_exact": facts.fps,
                "requested_fps": request.fps,
                "voice_duration_s": round(voice_s, 6),
                "codecs": f"{facts.video_codec}/{facts.audio_codec}",
                "audio_sample_rate": facts.audio_rate,
                "audio_channels": facts.audio_channels,
                "faststart": faststart,
                "captions": "sidecar",
                "bytes": len(data),
            },
        )


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
