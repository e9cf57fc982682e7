"""The hosted video adapter (fal's queue, ``fal-ai/ffmpeg-api/compose``) against the
provider simulator, over real HTTP on 127.0.0.1: real MP4s decoded with PyAV."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from model_adapters.http.base import MediaURLRefused, decode_wav, fit_png
from model_adapters.http.video import MODEL, FalVideoCompose, pad_wav, probe_mp4, remux_faststart, top_level_boxes
from model_adapters.registry import ADAPTER_KINDS, adapter_kind
from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from model_adapters.simulator.server import encode_wav16, render_png, synth_speech
from model_adapters.types import (
    ContentPolicyError,
    FatalProviderError,
    MalformedResponse,
    UnsupportedInput,
    VideoRequest,
    VideoResult,
)

KEY_ENV = "STUDIO_TEST_FAL_KEY"
KEY = "fal-test-key-0123456789"
WIDTH, HEIGHT, FPS, TAIL_S = 256, 144, 30, 0.5
STILL = render_png("a reading lamp", 144, 256, 3)  # portrait: cover-cropped to the landscape frame
SPEECH = synth_speech("Meet Lumen. Warm light, no glare.", 24000)
WAV = encode_wav16(SPEECH.samples, SPEECH.sample_rate)


def video_request(image: bytes = STILL, audio: bytes = WAV, **fields: Any) -> VideoRequest:
    values: dict[str, Any] = dict(
        image_sha256=hashlib.sha256(image).hexdigest(),
        audio_sha256=hashlib.sha256(audio).hexdigest(),
        audio_duration_s=SPEECH.duration_s,
        cues=(),
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        tail_s=TAIL_S,
    )
    values.update(fields)
    return VideoRequest(**values)


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@contextmanager
def simulator(**settings: Any) -> Iterator[ProviderSimulator]:
    settings.setdefault("api_key", KEY)
    with ProviderSimulator(SimulatorSettings(**settings)) as sim:
        yield sim


def build(sim: ProviderSimulator, **kwargs: Any) -> FalVideoCompose:
    options = {"poll_interval_s": "0.01", "poll_max_interval_s": "0.05", **kwargs.pop("options", {})}
    return adapter_kind("fal-video-compose").build(
        adapter_id="test-fal-video",
        max_concurrency=2,
        model=MODEL,
        base_url=sim.base_url + "/fal",
        api_key_env=KEY_ENV,
        timeout_s=kwargs.pop("timeout_s", 10.0),
        options=options,
        **kwargs,
    )


def compose(adapter: FalVideoCompose, request: VideoRequest | None = None, image: bytes = STILL, audio: bytes = WAV) -> VideoResult:
    async def main() -> VideoResult:
        try:
            return await adapter.compose(request or video_request(image, audio), image, audio)
        finally:
            await adapter.aclose()

    return asyncio.run(main())


def decoded_streams(mp4: bytes) -> dict[str, Any]:
    """Decode every frame and sample: sizes, durations, the first picture."""
    with av.open(io.BytesIO(mp4)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        fps = float(video.average_rate)
        declared_audio_s = float(audio.duration * audio.time_base)
        declared_video_s = float(video.duration * video.time_base)
        pts, samples, sizes, first = [], 0, set(), None
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                pts.append(frame.pts)
                sizes.add((frame.width, frame.height))
                if first is None:
                    first = frame.to_ndarray(format="rgb24")
            else:
                samples += frame.samples
                rate = frame.sample_rate
        return {
            "fps": fps,
            "frames": len(pts),
            "sizes": sizes,
            "video_s": float((max(pts) - min(pts)) * video.time_base) + 1 / fps,
            "audio_s": samples / rate,  # with the encoder's padding of the last AAC frame
            "aac_frame_s": 1024 / rate,
            "declared_audio_s": declared_audio_s,
            "declared_video_s": declared_video_s,
            "codecs": (video.codec_context.name, audio.codec_context.name),
            "first": first,
        }


# --- the happy path ------------------------------------------------------------------------


def test_the_kind_is_registered_and_builds_with_router_kwargs():
    kind = ADAPTER_KINDS["fal-video-compose"]
    assert (kind.task, kind.version, kind.local) == ("video", "1", False)
    with simulator() as sim:
        adapter = build(sim, price={"per_output_second": 0.01})
        info = adapter.info
        assert (info.task, info.provider, info.model, info.max_concurrency) == ("video", "fal", MODEL, 2)
        assert info.price.per_output_second == 0.01
        assert {"h264", "aac", "captions:sidecar"} <= info.capabilities and "captions" not in info.capabilities
        assert build(sim).info.price.per_output_second == pytest.approx(0.0002)  # documented default
        with pytest.raises(ValueError, match="unknown option 'fps'"):
            build(sim, options={"fps": "30"})


def test_compose_returns_a_decodable_mp4_of_the_requested_size_in_sync():
    with simulator() as sim:
        result = compose(build(sim))
        calls = sim.stats()["calls"]
    assert calls["fal.submit"] == 1 and calls["fal.result"] == 1 and calls["media.get"] == 1
    streams = decoded_streams(result.mp4)
    frame_s = 1 / FPS
    expected_s = SPEECH.duration_s + TAIL_S
    assert streams["sizes"] == {(WIDTH, HEIGHT)} and streams["codecs"] == ("h264", "aac")
    assert streams["fps"] == pytest.approx(FPS)
    assert abs(streams["video_s"] - expected_s) <= frame_s and streams["frames"] == round(expected_s * FPS)
    assert abs(streams["declared_video_s"] - streams["video_s"]) < 1e-3
    # The voice, then silence to the end: declared and decoded (decoding adds at most one AAC frame).
    assert abs(streams["declared_audio_s"] - expected_s) <= frame_s
    assert 0 <= streams["audio_s"] - streams["declared_audio_s"] < streams["aac_frame_s"]
    assert abs(streams["declared_video_s"] - streams["declared_audio_s"]) <= frame_s
    assert top_level_boxes(result.mp4).index("moov") < top_level_boxes(result.mp4).index("mdat")
    # What the adapter reports is what the MP4 holds.
    assert (result.width, result.height, result.fps) == (WIDTH, HEIGHT, FPS)
    assert result.video_duration_s == pytest.approx(streams["video_s"], abs=1e-3)
    assert result.audio_duration_s == pytest.approx(streams["declared_audio_s"], abs=1e-3)
    assert result.extras["frames"] == streams["frames"] and result.extras["faststart"] == "provider"
    # The picture is the still, cover-cropped to the frame (H.264 at crf 28: close, not exact).
    reference = np.asarray(Image.open(io.BytesIO(fit_png(STILL, WIDTH, HEIGHT).png)).convert("RGB"), dtype=np.float32)
    assert np.abs(streams["first"].astype(np.float32) - reference).mean() < 8.0


def test_the_voice_is_padded_with_silence_never_changed():
    padded = pad_wav(WAV, 2.0 * SPEECH.duration_s)
    with wave.open(io.BytesIO(padded)) as reader:
        assert reader.getframerate() == SPEECH.sample_rate
        assert reader.getnframes() == round(2.0 * SPEECH.duration_s * SPEECH.sample_rate)
    samples, _ = decode_wav(padded)
    original, _ = decode_wav(WAV)
    assert np.array_equal(samples[: len(original)], original) and not samples[len(original) :].any()
    assert pad_wav(WAV, 0.1) == WAV  # never shortened


# --- what must not be stored ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"endpoints": {"fal": {"faults": {"sequence": ["malformed"]}}}},  # the provider's MP4 is cut in half
        {"endpoints": {"media": {"faults": {"malformed": 1.0}}}},  # the download is cut short
    ],
    ids=["broken-mp4", "truncated-download"],
)
def test_an_mp4_that_does_not_decode_is_malformed_response(settings):
    with simulator(**settings) as sim:
        with pytest.raises(MalformedResponse) as caught:
            compose(build(sim))
    assert caught.value.retryable and "GET video_url" in str(caught.value)


def test_a_video_of_another_size_is_malformed_response():
    with simulator(image_size_override=(128, 72)) as sim:
        with pytest.raises(MalformedResponse, match=r"the video is 128x72, the request is 256x144"):
            compose(build(sim))


def test_a_video_url_on_a_host_not_allowed_is_refused_and_never_fetched():
    with simulator(media_base_url="http://169.254.169.254") as sim:
        with pytest.raises(MediaURLRefused) as caught:
            compose(build(sim))
        assert sim.stats()["calls"].get("media.get", 0) == 0
    assert isinstance(caught.value, UnsupportedInput) and not caught.value.retryable
    assert "origin not allowed" in str(caught.value) and "169.254.169.254" in str(caught.value)


@pytest.mark.parametrize(("fault", "error"), [("job_failure", FatalProviderError), ("content_policy", ContentPolicyError)])
def test_failed_and_refused_jobs_are_typed_errors(fault, error):
    with simulator(endpoints={"fal": {"faults": {"sequence": [fault]}}}) as sim:
        with pytest.raises(error):
            compose(build(sim))


# --- bad inputs ---------------------------------------------------------------------------------


def test_missing_input_data_is_a_clear_error_before_any_request():
    with simulator() as sim:
        with pytest.raises(ValueError, match=r"no image bytes were given"):
            compose(build(sim), video_request(), image=b"")
        with pytest.raises(ValueError, match=r"audio bytes have sha256"):
            compose(build(sim), video_request(), audio=WAV + b"\x00\x00")
        with pytest.raises(ValueError, match=r"the audio is not a usable WAV"):
            compose(build(sim), video_request(audio=b"RIFX" + WAV[4:]), audio=b"RIFX" + WAV[4:])
        assert sim.stats()["calls"] == {}


def _track(kind: str, url: str, duration: int = 1000) -> dict[str, Any]:
    return {"id": kind, "type": kind, "keyframes": [{"url": url, "timestamp": 0, "duration": duration}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "tracks must be a non-empty list"),
        ({"tracks": [{"id": "1", "type": "video"}]}, "tracks[0].keyframes must be a non-empty list"),
        (
            {"tracks": [{"id": "1", "type": "video", "keyframes": [{"timestamp": 0, "duration": 1000}]}]},
            "tracks[0].keyframes[0].url is required",
        ),
        ({"tracks": [_track("video", "data:image/png;base64,%%%")]}, "not valid base64"),
        ({"tracks": [_track("video", "data:image/png;base64," + base64.b64encode(b"not a png").decode())]}, "the image does not decode"),
        ({"tracks": [_track("audio", "data:audio/wav;base64," + base64.b64encode(WAV).decode())]}, "a video track"),
    ],
)
def test_the_simulator_answers_400_naming_what_is_missing(body, message):
    with simulator() as sim:
        reply = httpx.post(f"{sim.base_url}/fal/{MODEL}", json=body, headers={"authorization": f"Key {KEY}"})
    assert reply.status_code == 400 and message in reply.json()["detail"]["message"]


# --- an MP4 with moov last --------------------------------------------------------------------


def test_an_mp4_with_moov_last_is_remuxed_moov_first_without_reencoding():
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:  # BytesIO: no +faststart, moov last
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        audio = out.add_stream("aac", rate=24000, layout="mono")
        frame = av.VideoFrame.from_ndarray(np.full((36, 64, 3), 90, np.uint8), format="rgb24")
        packets = []
        for index in range(15):
            frame.pts = index
            packets += video.encode(frame)
        packets += video.encode(None)
        for start in range(0, 12000, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 24000, start, Fraction(1, 24000)
            packets += audio.encode(chunk)
        packets += audio.encode(None)
        for packet in packets:
            out.mux(packet)
    original = buffer.getvalue()
    assert not probe_mp4(original).faststart
    moved = remux_faststart(original)
    before, after = probe_mp4(original), probe_mp4(moved)
    assert after.faststart and after.frames == before.frames == 15
    assert after.audio_duration_s == pytest.approx(before.audio_duration_s)
