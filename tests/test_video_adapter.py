"""The local video adapter (model_adapters.local_video.PyAVCompositor), offline.

Inputs are made here (a synthetic still and a 16-bit mono tone); outputs are
decoded with PyAV and checked for what the synced_video asset relies on:
codecs, size, frame rate, durations, faststart, the camera move, the captions.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from model_adapters import local_video as lv
from model_adapters.local_video import PyAVCompositor
from model_adapters.media.wav import encode_wav
from model_adapters.types import CaptionCue, VideoRequest

VOICE_S = 2.0
TAIL_S = 0.5
CUE = CaptionCue(start_s=0.5, end_s=1.2, lines=("Cold for 24 hours",))


# --- inputs ---------------------------------------------------------------------------


def make_still(width: int, height: int) -> bytes:
    """Gradient, shapes with hard edges and a little grain: motion and captions both show."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 80 * x / width, 60 + 120 * y / height, 160 - 60 * (x + y) / (width + height)], axis=-1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.12) * min(width, height)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=(255, 255, 255), width=2)
    pixels = np.asarray(image).astype(np.float32) + rng.normal(0, 2, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def make_wav(seconds: float = VOICE_S, rate: int = 22050) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.4 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2")
    return encode_wav(pcm, rate)


def make_request(png: bytes, wav: bytes, width: int, height: int, *, cues=(CUE,), fps: int = 30, seed: int = 1) -> VideoRequest:
    return VideoRequest(
        image_sha256=hashlib.sha256(png).hexdigest(),
        audio_sha256=hashlib.sha256(wav).hexdigest(),
        audio_duration_s=VOICE_S,
        cues=cues,
        width=width,
        height=height,
        fps=fps,
        tail_s=TAIL_S,
        seed=seed,
    )


STILLS = {"9:16": (540, 960), "1:1": (600, 600)}
SIZES = {"9:16": (320, 568), "1:1": (480, 480)}


@pytest.fixture(scope="module")
def adapter() -> PyAVCompositor:
    return PyAVCompositor()


@pytest.fixture(scope="module")
def wav() -> bytes:
    return make_wav()


@pytest.fixture(scope="module")
def stills() -> dict[str, bytes]:
    return {ratio: make_still(*size) for ratio, size in STILLS.items()}


@pytest.fixture(scope="module")
def composed(adapter, stills, wav):
    """One video per aspect ratio, with the cue and without it (same seed)."""
    results = {}
    for ratio, (width, height) in SIZES.items():
        png = stills[ratio]
        with_cue = make_request(png, wav, width, height)
        without = make_request(png, wav, width, height, cues=())
        results[ratio] = (
            with_cue,
            asyncio.run(adapter.compose(with_cue, png, wav)),
            asyncio.run(adapter.compose(without, png, wav)),
        )
    return results


# --- decoding helpers -------------------------------------------------------------------


def luma_frames(mp4: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        return [frame.to_ndarray(format="gray").astype(np.float32) for frame in container.decode(video=0)]


def decoded_audio(mp4: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# --- the container --------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", list(SIZES))
def test_streams_codecs_size_and_rate(composed, ratio):
    request, result, _ = composed[ratio]
    with av.open(io.BytesIO(result.mp4)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264"
        assert v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (request.width, request.height)
        assert v.average_rate == request.fps
        assert a.codec_context.name == "aac"
        assert a.codec_context.sample_rate == 48000
        # Tagged as what the frames hold: BT.709, limited range.
        assert v.codec_context.colorspace == 1 and v.codec_context.color_range == 1
    assert (result.width, result.height, result.fps) == (request.width, request.height, request.fps)


@pytest.mark.parametrize("ratio", list(SIZES))
def test_durations_and_frame_count(composed, ratio):
    request, result, _ = composed[ratio]
    frame = 1 / request.fps
    expected_frames = round((VOICE_S + TAIL_S) * request.fps)
    with av.open(io.BytesIO(result.mp4)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        v_dur, a_dur = float(v.duration * v.time_base), float(a.duration * a.time_base)
        assert v.frames == expected_frames
    assert len(luma_frames(result.mp4)) == expected_frames
    assert abs(v_dur - (VOICE_S + TAIL_S)) <= frame + 1e-6
    assert abs(v_dur - a_dur) <= frame + 1e-6
    assert result.video_duration_s == pytest.approx(v_dur, abs=1e-6)
    assert result.audio_duration_s == pytest.approx(a_dur, abs=1e-6)
    assert result.extras["frames"] == expected_frames
    assert result.extras["realtime_factor"] > 0 and result.extras["encode_s"] > 0


def test_moov_before_mdat(composed):
    for _, result, _ in composed.values():
        kinds = [kind for kind, _, _ in lv.mp4_top_level_boxes(result.mp4)]
        assert kinds[0] == "ftyp"
        assert kinds.index("moov") < kinds.index("mdat")
        assert result.extras["faststart"] == "movflags"


def test_audio_is_the_voice_then_silence(composed):
    _, result, _ = composed["9:16"]
    samples, rate = decoded_audio(result.mp4)
    assert rate == 48000
    assert abs(samples.shape[1] / rate - result.audio_duration_s) < 0.03
    mono = samples.mean(axis=0)
    voice = mono[int(0.2 * rate) : int(1.8 * rate)]
    tail = mono[int((VOICE_S + 0.1) * rate) : int((VOICE_S + TAIL_S - 0.05) * rate)]
    assert np.sqrt(np.mean(voice**2)) > 0.2  # 0.4 amplitude sine: RMS ~0.28
    assert np.sqrt(np.mean(tail**2)) < 0.01
    # The tone's pitch survives resampling: 330 Hz.
    spectrum = np.abs(np.fft.rfft(voice * np.hanning(len(voice))))
    assert abs(np.argmax(spectrum) * rate / len(voice) - 330) < 3


# --- the picture ------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", list(SIZES))
def test_camera_moves_smoothly(composed, ratio):
    _, _, plain = composed[ratio]
    frames = luma_frames(plain.mp4)
    overall = mad(frames[0], frames[-1])
    steps = [mad(a, b) for a, b in zip(frames, frames[1:], strict=False)]
    assert overall > 6, f"first and last frames barely differ ({overall:.2f})"
    assert max(steps) < overall / 4, f"a jump between consecutive frames: {max(steps):.2f} vs {overall:.2f}"


@pytest.mark.parametrize("ratio", list(SIZES))
def test_caption_shows_exactly_during_its_cue(composed, ratio):
    request, captioned, plain = composed[ratio]
    with_cue, without = luma_frames(captioned.mp4), luma_frames(plain.mp4)
    left, top, right, bottom = lv.layout_caption(CUE.lines, request.width, request.height).box
    assert bottom > request.height * 0.6  # the bottom safe area
    inside = [i for i in range(len(with_cue)) if CUE.start_s <= i / request.fps < CUE.end_s]
    assert inside == list(range(15, 36))
    for i in (inside[0], inside[len(inside) // 2], inside[-1]):
        region = (slice(top, bottom), slice(left, right))
        assert mad(with_cue[i][region], without[i][region]) > 10, f"no caption at frame {i}"
    for i in (inside[0] - 1, inside[-1] + 1, 0, len(with_cue) - 1):
        region = (slice(top, bottom), slice(left, right))
        assert mad(with_cue[i][region], without[i][region]) < 4, f"caption at frame {i}, outside its cue"
    # Nothing else in the frame changes.
    upper = (slice(0, top - 8), slice(None))
    assert mad(with_cue[inside[3]][upper], without[inside[3]][upper]) < 1
    assert captioned.extras["frames_with_caption"] == len(inside)


def test_same_request_same_length(adapter, stills, wav):
    request = make_request(stills["1:1"], wav, 160, 160, fps=24, seed=9)
    first = adapter.compose_sync(request, stills["1:1"], wav)
    second = adapter.compose_sync(request, stills["1:1"], wav)
    assert first.extras["frames"] == second.extras["frames"] == round((VOICE_S + TAIL_S) * 24)
    assert first.video_duration_s == second.video_duration_s
    assert first.audio_duration_s == second.audio_duration_s
    assert (first.extras["zoom"], first.extras["pan"]) == (second.extras["zoom"], second.extras["pan"])


def test_fast_path_matches_float_reference(stills):
    """The uint8 kernel + phase plan + pre-filtered chroma vs grid_sample in float with 4:2:0 done after."""
    still = lv.decode_still(stills["9:16"])
    width, height, n = 320, 568, 40
    path = lv.camera_path(n, (still.shape[2], still.shape[1]), (width, height), seed=4)
    overlays = [lv.build_overlay(CaptionCue(start_s=0.0, end_s=0.5, lines=("Hello",)), width, height)]
    schedule = lv.cue_schedule(overlays, n, 30)
    fast = lv._FastFrames(still, path, width, height, overlays, schedule)
    assert fast.max_phase_error < 0.1  # source px: sub-pixel positions hit within 1/10 px
    fast_frames = list(fast)
    grid_frames = list(lv._GridFrames(still, path, width, height, overlays, schedule, torch.device("cpu")))

    def planes(frame):
        return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.float64) for p in frame.planes]

    def psnr(a, b):
        return 10 * math.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12))

    for i in (0, 10, 39):
        for fast_plane, grid_plane in zip(planes(fast_frames[i]), planes(grid_frames[i]), strict=False):
            assert psnr(fast_plane, grid_plane) > 40
    # ... and the comparison can tell positions apart: the start and the end of the move differ.
    assert psnr(planes(fast_frames[0])[0], planes(grid_frames[39])[0]) < 35


# --- pieces -------------------------------------------------------------------------------------


def test_camera_path_stays_inside_the_still():
    cases = [((1080, 1920), (720, 1280)), ((1080, 1080), (720, 1280)), ((1920, 1080), (720, 720)), ((1080, 1080), (480, 480))]
    for still, out in cases:
        for seed in range(16):
            path = lv.camera_path(50, still, out, seed)
            half_w = out[0] / (2 * path.cover_scale * path.zoom)
            half_h = out[1] / (2 * path.cover_scale * path.zoom)
            assert np.all(path.center_x - half_w >= -1e-6) and np.all(path.center_x + half_w <= still[0] + 1e-6)
            assert np.all(path.center_y - half_h >= -1e-6) and np.all(path.center_y + half_h <= still[1] + 1e-6)
            assert {round(path.zoom[0], 6), round(path.zoom[-1], 6)} == {1.0, lv.ZOOM_MAX}
            assert np.all(np.abs(np.diff(path.zoom, 2)) < 1e-3)  # eased: no kinks


def test_camera_direction_depends_on_seed_only():
    paths = [lv.camera_path(30, (1080, 1920), (720, 1280), seed) for seed in range(12)]
    again = lv.camera_path(30, (1080, 1920), (720, 1280), 5)
    assert np.array_equal(paths[5].center_x, again.center_x) and np.array_equal(paths[5].zoom, again.zoom)
    assert len({(p.zoom_in, p.pan) for p in paths}) > 3


def test_cue_schedule_is_half_open():
    overlays = [lv.build_overlay(CaptionCue(start_s=1.0, end_s=2.0, lines=("a",)), 64, 64)]
    shown = lv.cue_schedule(overlays, 90, 30)
    assert [i for i, s in enumerate(shown) if s == 0] == list(range(30, 60))
    assert lv.build_overlay(CaptionCue(start_s=1.0, end_s=2.0, lines=("  ",)), 64, 64) is None


def test_caption_layout_wraps_inside_the_frame():
    long = ("Cold for twenty-four hours, hot for twelve, and light enough for every trail",)
    for width, height in [(720, 1280), (1280, 720), (480, 480), (320, 568)]:
        layout = lv.layout_caption(long, width, height)
        left, top, right, bottom = layout.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert all(v % 2 == 0 for v in layout.box)
        assert len(layout.lines) >= 2
        assert bottom >= height * 0.8


def test_rgb_to_yuv709_limited_range():
    rgb = torch.tensor([[255.0, 0.0, 255.0, 0.0], [255.0, 0.0, 0.0, 255.0], [255.0, 0.0, 0.0, 0.0]]).view(3, 1, 4)
    yuv = lv.rgb_to_yuv709(rgb)[:, 0]
    assert yuv[:, 0].tolist() == pytest.approx([235, 128, 128], abs=1e-3)  # white
    assert yuv[:, 1].tolist() == pytest.approx([16, 128, 128], abs=1e-3)  # black
    assert yuv[2, 2].item() == pytest.approx(240, abs=1e-3)  # red: Cr at its top
    back = lv.yuv709_to_rgb(yuv.T.numpy())
    assert np.allclose(back, rgb[:, 0].T.numpy(), atol=1e-3)


def test_move_moov_to_front_relocates_a_plain_mp4(tmp_path):
    path = tmp_path / "plain.mp4"
    with av.open(str(path), "w", format="mp4") as container:  # no faststart: moov at the end
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = path.read_bytes()
    assert not lv.is_faststart(data)
    moved = lv.move_moov_to_front(data)
    assert lv.is_faststart(moved) and len(moved) == len(data)
    assert [f.tobytes() for f in luma_frames(moved)] == [f.tobytes() for f in luma_frames(data)]


# --- the adapter's contract ---------------------------------------------------------------------


def test_adapter_info():
    info = PyAVCompositor(adapter_id="video-a", max_concurrency=2, preset="faster", crf=20).info
    assert (info.adapter_id, info.task, info.provider, info.model) == ("video-a", "video", "local", "pyav-kenburns")
    assert str(av.ffmpeg_version_info) in info.model_version and "faster-crf20" in info.model_version
    assert info.price.per_output_second == 0 and info.max_concurrency == 2


def test_rejects_bad_requests(adapter, stills, wav):
    png = stills["1:1"]
    with pytest.raises(ValueError, match="even"):
        adapter.compose_sync(make_request(png, wav, 161, 160), png, wav)
    with pytest.raises(ValueError, match="sha256"):
        adapter.compose_sync(make_request(png, wav, 160, 160), png + b"x", wav)
    with pytest.raises(ValueError, match="not a readable image"):
        bogus = b"not a png"
        adapter.compose_sync(make_request(bogus, wav, 160, 160), bogus, wav)
    with pytest.raises(ValueError):
        PyAVCompositor(max_concurrency=0)
    asyncio.run(adapter.aclose())


def test_no_dagster_import():
    code = "import sys, model_adapters.local_video; assert 'dagster' not in sys.modules, 'dagster imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
