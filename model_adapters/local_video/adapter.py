"""The adapter: :class:`PyAVCompositor` checks the request, makes frames on a worker thread, encodes
H.264 + AAC and muxes a faststart MP4."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import os
import queue
import tempfile
import threading
import time
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np
import torch
from PIL import Image

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.devices import pick_device
from model_adapters.local_video.audio import (
    AUDIO_BITRATE,
    AUDIO_LAYOUT,
    AUDIO_RATE,
    audio_frames,
    decode_audio,
    voice_duration,
)
from model_adapters.local_video.camera import CameraPath, camera_path
from model_adapters.local_video.captions_overlay import build_overlay, cue_schedule
from model_adapters.local_video.colour import AVCOL_PRI_BT709, AVCOL_RANGE_MPEG, AVCOL_SPC_BT709, AVCOL_TRC_BT709
from model_adapters.local_video.fast_path import _FastFrames
from model_adapters.local_video.grid_path import _GridFrames
from model_adapters.local_video.workers import frame_workers
from model_adapters.media.mp4 import is_faststart, move_moov_to_front
from model_adapters.media.probe import probe_mp4
from model_adapters.types import AdapterError, AdapterInfo, Price, VideoRequest, VideoResult

PROVIDER = "local"
MODEL = "pyav-kenburns"
ALGORITHM_VERSION = "1"

MIN_SIDE, MAX_SIDE = 16, 4096
MAX_FPS = 120
QUEUE_FRAMES = 12

Backend = Literal["auto", "fast", "grid"]

_DONE = object()  # the producer's last item on the frame queue


def decode_still(png: bytes) -> torch.Tensor:
    """PNG (or any image Pillow reads) to uint8 RGB (3, H, W)."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"still is not a readable image: {exc}") from exc
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class PyAVCompositor:
    """Local ``video`` adapter: Ken Burns move over the still, burned-in captions, H.264 + AAC MP4."""

    def __init__(
        self,
        adapter_id: str = "local-pyav",
        max_concurrency: int = 1,
        preset: str = "veryfast",
        crf: int = 23,
        threads: int = 0,
        backend: Backend = "auto",
        audio_bitrate: int = AUDIO_BITRATE,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {crf}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: libx264 decides), got {threads}")
        if backend not in ("auto", "fast", "grid"):
            raise ValueError(f"backend must be 'auto', 'fast' or 'grid', got {backend!r}")
        self.preset, self.crf, self.threads, self.backend = preset, crf, threads, backend
        self.audio_bitrate = audio_bitrate
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="video",
            provider=PROVIDER,
            model=MODEL,
            model_version=f"{ALGORITHM_VERSION}+ffmpeg{av.ffmpeg_version_info}+x264-{preset}-crf{crf}",
            price=Price(per_output_second=0.0),
            capabilities=frozenset({"h264", "aac", "captions", "ken-burns", "faststart"}),
            max_concurrency=max_concurrency,
        )
        self._semaphores = PerLoopSemaphores(max_concurrency)

    async def compose(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> VideoResult:
        # The x264 encode runs on the CPU whatever device makes the frames.
        async with self._semaphores.get(), COMPUTE_SLOTS.hold("cpu", "local-video"):
            return await asyncio.to_thread(self.compose_sync, request, image_png, audio_wav)

    async def aclose(self) -> None:
        """Nothing to release: every call opens and closes its own codecs and files."""

    # -- blocking work --------------------------------------------------------------------

    def compose_sync(self, request: VideoRequest, image_png: bytes, audio_wav: bytes) -> VideoResult:
        """The whole job, blocking: what :meth:`compose` runs in a worker thread."""
        started = time.perf_counter()
        _validate(request, image_png, audio_wav)
        audio_s = voice_duration(audio_wav)
        fps = request.fps
        n_frames = max(1, round((audio_s + request.tail_s) * fps))
        video_s = n_frames / fps
        # The audio lasts as long as the video, and never cuts the voice.
        audio_samples = max(round(video_s * AUDIO_RATE), round(audio_s * AUDIO_RATE))
        device = self._device()

        with tempfile.TemporaryDirectory(prefix="campaign-video-") as folder:
            path = os.path.join(folder, "video.mp4")
            stats = self._encode(path, request, image_png, audio_wav, audio_samples, n_frames, device)
            with open(path, "rb") as handle:
                data = handle.read()
        faststart = "movflags"
        if not is_faststart(data):  # never seen with FFmpeg's mov muxer; kept as a guarantee
            data = move_moov_to_front(data)
            faststart = "python"
        facts = probe_mp4(data)
        if facts.video_frames not in (0, n_frames):
            raise AdapterError(f"the MP4 holds {facts.video_frames} frames, expected {n_frames}", provider=PROVIDER)
        elapsed = time.perf_counter() - started
        return VideoResult(
            mp4=data,
            width=request.width,
            height=request.height,
            fps=fps,
            duration_s=facts.duration_s,
            video_duration_s=facts.video_duration_s,
            audio_duration_s=facts.audio_duration_s,
            extras={
                "frames": n_frames,
                "encode_s": round(elapsed, 4),
                "realtime_factor": round(video_s / elapsed, 3) if elapsed > 0 else None,
                "backend": stats["backend"],
                "voice_duration_s": round(audio_s, 6),
                "input_sample_rate": stats["input_sample_rate"],
                "audio_sample_rate": AUDIO_RATE,
                "zoom": "in" if stats["zoom_in"] else "out",
                "pan": list(stats["pan"]),
                "frames_with_caption": stats["frames_with_caption"],
                "faststart": faststart,
                "max_phase_error_px": stats["max_phase_error"],
                "bytes": len(data),
            },
        )

    def _device(self) -> torch.device:
        return torch.device("cpu") if self.backend == "fast" else pick_device()

    def _frame_source(
        self, still: torch.Tensor, request: VideoRequest, n_frames: int, device: torch.device
    ) -> tuple[_GridFrames | _FastFrames, CameraPath, list[int]]:
        path = camera_path(n_frames, (still.shape[2], still.shape[1]), (request.width, request.height), request.seed)
        overlays = [ov for ov in (build_overlay(cue, request.width, request.height) for cue in request.cues) if ov is not None]
        schedule = cue_schedule(overlays, n_frames, request.fps)
        # auto: the uint8 kernel on CPU, grid_sample batches on an accelerator.
        use_grid = self.backend == "grid" or (self.backend == "auto" and device.type != "cpu")
        frames: _GridFrames | _FastFrames
        if use_grid:
            frames = _GridFrames(still, path, request.width, request.height, overlays, schedule, device)
        else:
            frames = _FastFrames(still, path, request.width, request.height, overlays, schedule)
        return frames, path, schedule

    def _encode(
        self, path: str, request: VideoRequest, image_png: bytes, audio_wav: bytes, audio_samples: int, n_frames: int, device: torch.device
    ) -> dict[str, Any]:
        """Frames from a worker thread, audio decoded and encoded here in step with them, muxed here."""
        fps = request.fps
        stats: dict[str, Any] = {}
        frames_q: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_FRAMES)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    frames_q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                still = decode_still(image_png)
                frames, camera, schedule = self._frame_source(still, request, n_frames, device)
                stats.update(
                    backend=frames.name,
                    zoom_in=camera.zoom_in,
                    pan=camera.pan,
                    frames_with_caption=sum(1 for s in schedule if s >= 0),
                    max_phase_error=getattr(frames, "max_phase_error", None),
                )
                for frame in frames:
                    if not put(frame):
                        return
                put(_DONE)
            except BaseException as exc:  # handed to the encoding thread
                put(exc)

        producer = frame_workers().submit(produce)
        audio_thread: threading.Thread | None = None
        try:
            with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
                video = container.add_stream("libx264", rate=fps)
                video.width, video.height, video.pix_fmt = request.width, request.height, "yuv420p"
                frame_time_base = Fraction(1, fps)
                video.time_base = frame_time_base
                cc = video.codec_context
                cc.thread_count = self.threads
                cc.color_primaries, cc.color_trc, cc.colorspace = AVCOL_PRI_BT709, AVCOL_TRC_BT709, AVCOL_SPC_BT709
                cc.color_range = AVCOL_RANGE_MPEG
                video.options = {"preset": self.preset, "crf": str(self.crf)}
                audio = container.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT)
                audio.bit_rate = self.audio_bitrate
                # Opened here, so the muxer (started by the first mux, in this thread) finds it
                # open and only reads its parameters while the audio thread encodes.
                audio.codec_context.open()
                audio_packets: collections.deque[Any] = collections.deque()
                audio_error: list[BaseException] = []

                def encode_audio() -> None:
                    # Decoding, resampling and AAC run beside the video (the encoder's
                    # own thread is on the critical path); packets are muxed by this thread.
                    try:
                        pcm, stats["input_sample_rate"], _ = decode_audio(audio_wav)
                        for frame in audio_frames(pcm, audio_samples):
                            audio_packets.extend(audio.encode(frame))
                        audio_packets.extend(audio.encode(None))
                    except BaseException as exc:
                        audio_error.append(exc)

                audio_thread = threading.Thread(target=encode_audio, name="video-audio", daemon=True)
                audio_thread.start()

                count = 0
                while True:
                    item = frames_q.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    item.pts = count
                    item.time_base = frame_time_base  # the stream's own changes when the muxer starts
                    item.color_range, item.colorspace = AVCOL_RANGE_MPEG, AVCOL_SPC_BT709
                    for packet in video.encode(item):
                        container.mux(packet)
                    count += 1
                    # Interleave the audio made so far, up to the picture just sent.
                    while audio_packets and audio_packets[0].pts * fps <= count * AUDIO_RATE:
                        container.mux(audio_packets.popleft())
                for packet in video.encode(None):
                    container.mux(packet)
                audio_thread.join()
                if audio_error:
                    raise audio_error[0]
                while audio_packets:
                    container.mux(audio_packets.popleft())
                if count != n_frames:
                    raise AdapterError(f"made {count} frames, expected {n_frames}", provider=PROVIDER)
        finally:
            stop.set()
            if audio_thread is not None:
                audio_thread.join()
            producer.result()
        return stats


def _validate(request: VideoRequest, image_png: bytes, audio_wav: bytes) -> None:
    for name, value in (("width", request.width), ("height", request.height)):
        if value % 2 or not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(f"video {name} must be even and in [{MIN_SIDE}, {MAX_SIDE}], got {value}")
    if not 1 <= request.fps <= MAX_FPS:
        raise ValueError(f"fps must be in [1, {MAX_FPS}], got {request.fps}")
    if request.tail_s < 0:
        raise ValueError(f"tail_s must be >= 0, got {request.tail_s}")
    for name, data, expected in (("image", image_png, request.image_sha256), ("audio", audio_wav, request.audio_sha256)):
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ValueError(f"{name} bytes have sha256 {actual[:12]}…, the request names {expected[:12]}…")
