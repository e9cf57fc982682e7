"""How fast the local video adapter composes a 720p30 clip, against a bare PyAV encode.

    .venv/bin/python benchmarks/video_encode.py [--seconds 10] [--size 720x1280] [--reps 3] [--naive]

A synthetic, textured still (1080x1920 for 9:16) and a tone for a voice make a
``--seconds`` clip (voice + 0.5 s tail) with three caption cues. Timed, each
``--reps`` times (median and best are printed):

* ``compose``: ``PyAVCompositor.compose_sync`` end to end (PNG and WAV decode,
  camera move, captions, x264 + AAC, faststart, probe).
* ``bare rgb24``: a bare PyAV encode of the same number of pre-made, constant
  frames at the same settings, handed over as RGB (``VideoFrame.from_ndarray``;
  swscale converts to yuv420p), the usual way to feed PyAV.
* ``bare yuv420p``: the same with the frames already in yuv420p (no conversion).
* ``encode only``: the encoder alone on the *moving* frames the compositor makes
  (pre-rendered into memory): the floor for this content at these settings.
* ``naive`` (``--naive``): per-frame PIL crop + resize and RGB frames, the
  approach this adapter replaced.

All use the same x264 preset, CRF and thread setting as the compositor. The
four timings are interleaved round by round, and ratios are given both from
the medians and per round. Before each timing the script waits (up to 60 s)
for the machine to be idle, and prints how much CPU other processes used
while it ran (``others``, in cores), so a figure taken on a busy machine is
visible as such.

Results (2 vCPU AMD EPYC VM, torch 2.13.0+cpu, PyAV 18.1.0, FFmpeg 8.1.2,
720x1280@30, 300 frames, ``--reps 5 --naive``, machine otherwise idle):

    compose        median  1.910 s  best  1.699 s  rtf  5.24x (best  5.88x)
    bare rgb24     median  2.248 s  best  2.041 s  rtf  4.45x  (constant frames)
    bare yuv420p   median  1.363 s  best  1.209 s  rtf  7.34x  (constant frames)
    encode only    median  1.456 s  best  1.421 s  rtf  6.87x  (the compositor's moving frames)
    naive PIL      median  7.540 s                 rtf  1.33x  (per-frame PIL resize)
    compose / bare rgb24   = 0.85
    compose / bare yuv420p = 1.40
    compose / encode only  = 1.31

The encoder is the floor: libx264 (veryfast, two threads) alone keeps about
1.35 of the 2 cores busy; the compositor's frame work (~3 ms a frame on one
thread), the AAC encode and the rest fill most of the remaining 0.65.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cpu_accounting import process_cpu_s  # noqa: E402
from model_adapters import local_video  # noqa: E402
from model_adapters.local_video import PyAVCompositor  # noqa: E402
from model_adapters.media.wav import encode_wav  # noqa: E402
from model_adapters.types import CaptionCue, VideoRequest  # noqa: E402

# --- inputs -------------------------------------------------------------------------


def textured_still(width: int, height: int, seed: int = 0) -> bytes:
    """A busy picture: gradients, ripples, shapes with outlines, mild grain (like a photo's texture)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        img[..., c] = 120 + 60 * np.sin(x / width * 3 + c) + 50 * np.cos(y / height * 4 + 2 * c)
    for _ in range(12):
        fx, fy = rng.uniform(5, 60, 2)
        phase = rng.uniform(0, 6.28)
        img += rng.uniform(3, 10) * np.sin(x / width * fx + y / height * fy + phase)[..., None] * rng.uniform(-1, 1, 3)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = min(width, height) / 1080
    for k in range(25):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(20, 250) * scale
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        if k % 2:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=(255, 255, 255), width=3)
        else:
            draw.rectangle([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    grain = np.asarray(image).astype(np.float32) + rng.normal(0, 3, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def tone_wav(seconds: float, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2  # syllable-ish
    pcm = (0.3 * envelope * np.sin(2 * np.pi * 180 * t) * 32767).astype("<i2")
    return encode_wav(pcm, rate)


# --- machine load -------------------------------------------------------------------------


def _cpu_busy_total() -> tuple[float, float]:
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_until_idle(max_wait_s: float = 60.0, threshold: float = 0.15) -> float:
    """Wait until other processes use under ``threshold`` of the machine; returns the last busy share."""
    if not os.path.exists("/proc/stat"):
        return float("nan")
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, total0 = _cpu_busy_total()
        time.sleep(0.5)
        busy1, total1 = _cpu_busy_total()
        share = (busy1 - busy0) / max(total1 - total0, 1e-9)
        if share < threshold or time.monotonic() > deadline:
            return share


class Timed:
    """Wall time of a block, and the CPU share other processes took meanwhile (in cores)."""

    def __enter__(self):
        wait_until_idle()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.busy0, _ = _cpu_busy_total() if os.path.exists("/proc/stat") else (0.0, 0.0)
        self.own0 = process_cpu_s()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        own = process_cpu_s() - self.own0
        if os.path.exists("/proc/stat"):
            busy1, _ = _cpu_busy_total()
            others = (busy1 - self.busy0) / self.tick - own
            self.others_cores = max(0.0, others / self.wall)
        else:
            self.others_cores = float("nan")
        self.own_cpu = own


# --- encoders under test -------------------------------------------------------------------


def _open_encoder(path: str, width: int, height: int, fps: int, adapter: PyAVCompositor):
    container = av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"})
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.thread_count = adapter.threads
    stream.options = {"preset": adapter.preset, "crf": str(adapter.crf)}
    return container, stream


def bare_encode(frames, n: int, width: int, height: int, fps: int, adapter: PyAVCompositor, fmt: str) -> int:
    """Encode ``n`` frames (``frames[i % len(frames)]``) given as ``fmt`` ndarrays; returns bytes written."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bare.mp4")
        container, stream = _open_encoder(path, width, height, fps, adapter)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format=fmt)
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        return os.path.getsize(path)


def naive_compose(still_png: bytes, n: int, width: int, height: int, fps: int, adapter: PyAVCompositor) -> int:
    """The per-frame PIL route: bilinear crop-and-resize of the RGB still (sub-pixel box), RGB frames to PyAV."""
    image = Image.open(io.BytesIO(still_png)).convert("RGB")
    path_ = local_video.camera_path(n, image.size, (width, height), seed=3)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "naive.mp4")
        container, stream = _open_encoder(path, width, height, fps, adapter)
        for i in range(n):
            vw = width / (path_.cover_scale * path_.zoom[i])
            vh = height / (path_.cover_scale * path_.zoom[i])
            box = (path_.center_x[i] - vw / 2, path_.center_y[i] - vh / 2, path_.center_x[i] + vw / 2, path_.center_y[i] + vh / 2)
            rgb = np.asarray(image.resize((width, height), Image.BILINEAR, box=box))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        return os.path.getsize(path)


def decoded_frames(mp4: bytes) -> list[np.ndarray]:
    """The compositor's own frames as yuv420p arrays (to time the encoder alone on them)."""
    with av.open(io.BytesIO(mp4)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


# --- main -------------------------------------------------------------------------------------


def _summary(name: str, runs: list[Timed], seconds: float, extra: str = "") -> float:
    walls = [r.wall for r in runs]
    median = statistics.median(walls)
    others = max(r.others_cores for r in runs)
    print(
        f"{name:<14} median {median:6.3f} s  best {min(walls):6.3f} s  "
        f"rtf {seconds / median:5.2f}x (best {seconds / min(walls):5.2f}x)  "
        f"own cpu {statistics.median(r.own_cpu for r in runs):5.2f} s  others {others:4.2f} cores {extra}"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (voice + 0.5 s tail)")
    parser.add_argument("--size", default="720x1280", help="output WxH (even)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also time the per-frame PIL route")
    parser.add_argument("--backend", default="auto", choices=("auto", "fast", "grid"))
    args = parser.parse_args()

    width, height = (int(v) for v in args.size.lower().split("x"))
    fps, seconds, tail = args.fps, args.seconds, 0.5
    still_size = (1080, 1920) if height > width else (1920, 1080) if width > height else (1080, 1080)
    still = textured_still(*still_size)
    wav = tone_wav(seconds - tail)
    voice = seconds - tail
    cues = (
        CaptionCue(start_s=0.0, end_s=voice * 0.35, lines=("Meet the new Aurora bottle,", "cold for 24 hours")),
        CaptionCue(start_s=voice * 0.35, end_s=voice * 0.7, lines=("Made for long trails",)),
        CaptionCue(start_s=voice * 0.7, end_s=voice, lines=("Get yours today",)),
    )
    request = VideoRequest(
        image_sha256=hashlib.sha256(still).hexdigest(),
        audio_sha256=hashlib.sha256(wav).hexdigest(),
        audio_duration_s=voice,
        cues=cues,
        width=width,
        height=height,
        fps=fps,
        tail_s=tail,
        seed=3,
    )
    adapter = PyAVCompositor(backend=args.backend)
    print(
        f"{width}x{height}@{fps}, {seconds:g} s clip, still {still_size[0]}x{still_size[1]}, "
        f"x264 preset={adapter.preset} crf={adapter.crf} threads={adapter.threads or 'auto'}, "
        f"{os.cpu_count()} CPUs, PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}"
    )

    # Warm-up (imports, kernels, the frame worker), and the frames for the encoder-only run.
    result = adapter.compose_sync(request, still, wav)
    n = result.extras["frames"]
    print(
        f"compose: {n} frames, {len(result.mp4) / 1e6:.2f} MB, backend {result.extras['backend']}, "
        f"video {result.video_duration_s:.3f} s, audio {result.audio_duration_s:.3f} s"
    )
    rgb = np.asarray(Image.open(io.BytesIO(still)).convert("RGB").resize((width, height), Image.LANCZOS)).copy()
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    moving = decoded_frames(result.mp4)

    # Rounds interleave the four timings, so a busy spell on a shared machine hits them alike.
    runs: dict[str, list[Timed]] = {"compose": [], "bare rgb24": [], "bare yuv420p": [], "encode only": []}
    jobs = {
        "compose": lambda: adapter.compose_sync(request, still, wav),
        "bare rgb24": lambda: bare_encode([rgb], n, width, height, fps, adapter, "rgb24"),
        "bare yuv420p": lambda: bare_encode([yuv], n, width, height, fps, adapter, "yuv420p"),
        "encode only": lambda: bare_encode(moving, n, width, height, fps, adapter, "yuv420p"),
    }
    for _ in range(args.reps):
        for name, job in jobs.items():
            with Timed() as timed:
                job()
            runs[name].append(timed)
    naive_runs = []
    if args.naive:
        with Timed() as timed:
            naive_compose(still, n, width, height, fps, adapter)
        naive_runs.append(timed)

    print()
    compose_s = _summary("compose", runs["compose"], seconds)
    medians = {
        "bare rgb24": _summary("bare rgb24", runs["bare rgb24"], seconds, "(constant frames)"),
        "bare yuv420p": _summary("bare yuv420p", runs["bare yuv420p"], seconds, "(constant frames)"),
        "encode only": _summary("encode only", runs["encode only"], seconds, "(the compositor's moving frames)"),
    }
    if naive_runs:
        _summary("naive PIL", naive_runs, seconds, "(per-frame PIL resize)")
    print()
    for name, median in medians.items():
        per_round = [c.wall / b.wall for c, b in zip(runs["compose"], runs[name], strict=False)]
        print(
            f"compose / {name:<12} = {compose_s / median:.2f} (medians); "
            f"per round: median {statistics.median(per_round):.2f}, best {min(per_round):.2f}"
        )


if __name__ == "__main__":
    main()
