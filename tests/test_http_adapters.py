"""HTTP adapters against the provider simulator, over real HTTP on 127.0.0.1.

Every adapter: real media decoded and checked; every error path mapped to the
typed error the router relies on; the media allow-list; the API key never in
messages or reprs; concurrency limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import json
import math
import time
import traceback
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from model_adapters import loudness
from model_adapters.http.base import (
    HttpAdapter,
    MediaURLRefused,
    decode_wav,
    fit_png,
    parse_allowed_host,
    parse_retry_after,
)
from model_adapters.http.comfyui import refine_size
from model_adapters.http.openai_compat import closest_size, estimate_word_timings
from model_adapters.registry import ADAPTER_KINDS, adapter_kind
from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from model_adapters.simulator.server import encode_wav16, render_png, synth_speech
from model_adapters.tasks import task_spec
from model_adapters.types import (
    AdapterError,
    AuthError,
    ConceptRequest,
    ConceptResult,
    ContentPolicyError,
    FatalProviderError,
    ImageRequest,
    ImageResult,
    MalformedResponse,
    ProviderTimeout,
    RateLimited,
    RefineRequest,
    RetryableError,
    UnsupportedInput,
    VideoRequest,
    VoiceRequest,
    VoiceResult,
)

KEY_ENV = "STUDIO_TEST_PROVIDER_KEY"
CANARY = "canary-7f3a9d2c41e8b6aa-never-shown"  # must never show up in an error or a repr

HTTP_KINDS = [name for name, kind in ADAPTER_KINDS.items() if not kind.local]
IMAGE_KINDS = ["openai-images", "replicate-images", "fal-images", "gmi-images", "comfyui-images"]
QUEUE_KINDS = ["replicate-images", "fal-images", "gmi-images"]
POLLING_KINDS = {*QUEUE_KINDS, "comfyui-images", "comfyui-refine", "fal-video-compose"}

SIM_PATHS = {
    "openai-chat": "/v1",
    "openai-images": "/v1",
    "openai-speech": "/v1",
    "fal-images": "/fal",
    "fal-video-compose": "/fal",
}
MODELS = {
    "openai-chat": "gpt-sim",
    "openai-images": "gpt-image-sim",
    "openai-speech": "tts-sim",
    "replicate-images": "sim/flux",
    "fal-images": "fal-ai/flux/schnell",
    "gmi-images": "seedream-sim",
    "comfyui-images": "sim.safetensors",
    "comfyui-refine": "sim.safetensors",
    "elevenlabs-speech": "eleven_sim",
    "fal-video-compose": "fal-ai/ffmpeg-api/compose",
}
GROUPS = {
    "openai-chat": "openai_chat",
    "openai-images": "openai_images",
    "openai-speech": "openai_speech",
    "replicate-images": "replicate",
    "fal-images": "fal",
    "gmi-images": "gmi",
    "comfyui-images": "comfyui",
    "comfyui-refine": "comfyui",
    "elevenlabs-speech": "elevenlabs",
    "fal-video-compose": "fal",
}

CONCEPT = ConceptRequest(
    campaign_id="spring",
    variant_id="v1",
    product="Lumen Lamp",
    audience="night readers",
    tone="Calm",
    palette=("#1b2a41", "#f2c14e"),
    banned_terms=("cheap",),
    locale="en-US",
    aspect_ratio="9:16",
    duration_s=10.0,
    seed=7,
)
IMAGE = ImageRequest(prompt="a reading lamp on a desk at night", width=288, height=512, palette=("#1b2a41",), seed=7)
VOICE = VoiceRequest(text="Meet Lumen, the lamp for night readers. Warm light, no glare.", locale="en-US", voice="default")
SOURCE_PNG = render_png("draft", 144, 256, 1)
REFINE = RefineRequest(
    source_sha256=hashlib.sha256(SOURCE_PNG).hexdigest(),
    min_short_side=270,
    aspect_ratio="9:16",
    palette=("#1b2a41",),
    headline="Meet Lumen",
    seed=7,
)
VIDEO_WAV = encode_wav16(synth_speech("Meet Lumen.", 24000).samples, 24000)
VIDEO = VideoRequest(
    image_sha256=hashlib.sha256(SOURCE_PNG).hexdigest(),
    audio_sha256=hashlib.sha256(VIDEO_WAV).hexdigest(),
    audio_duration_s=1.0,
    cues=(),
    width=128,
    height=72,
)
REQUESTS: dict[str, tuple[Any, ...]] = {
    "concept": (CONCEPT,),
    "image": (IMAGE,),
    "voice": (VOICE,),
    "refine": (REFINE, SOURCE_PNG),
    "video": (VIDEO, SOURCE_PNG, VIDEO_WAV),
}


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, CANARY)
    return CANARY


@contextmanager
def simulator(**settings: Any) -> Iterator[ProviderSimulator]:
    settings.setdefault("api_key", CANARY)
    with ProviderSimulator(SimulatorSettings(**settings)) as sim:
        yield sim


def faults(group: str, **values: Any) -> dict[str, Any]:
    return {"endpoints": {group: {"faults": values}}}


def build(
    kind: str,
    sim: ProviderSimulator,
    *,
    timeout_s: float = 5.0,
    max_concurrency: int = 4,
    allowed_hosts: tuple[str, ...] = (),
    **options: Any,
) -> Any:
    merged: dict[str, Any] = {}
    if kind in POLLING_KINDS:
        merged.update(poll_interval_s="0.01", poll_max_interval_s="0.05")
    if kind == "elevenlabs-speech":
        merged["voice_id"] = "sim-voice"
    merged.update(options)
    # As the Dagster resource passes them: every option value a string.
    return adapter_kind(kind).build(
        adapter_id=f"test-{kind}",
        max_concurrency=max_concurrency,
        model=MODELS[kind],
        base_url=sim.base_url + SIM_PATHS.get(kind, ""),
        api_key_env=KEY_ENV,
        timeout_s=timeout_s,
        allowed_hosts=allowed_hosts,
        options={k: str(v) for k, v in merged.items()},
    )


def call(adapter: Any, *args: Any) -> Any:
    """Run the adapter's task coroutine once in a fresh loop, closing the adapter after."""
    method = getattr(adapter, task_spec(adapter.info.task).method)

    async def main() -> Any:
        try:
            return await method(*(args or REQUESTS[adapter.info.task]))
        finally:
            await adapter.aclose()

    return asyncio.run(main())


def failure(adapter: Any, *args: Any) -> AdapterError:
    with pytest.raises(AdapterError) as caught:
        call(adapter, *args)
    return caught.value


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def assert_no_secret(*things: Any) -> None:
    for thing in things:
        text = thing if isinstance(thing, str) else repr(thing)
        assert CANARY not in text
        if isinstance(thing, BaseException):
            assert CANARY not in str(thing)
            assert CANARY not in "".join(traceback.format_exception(thing))


def assert_monotonic(words: tuple[Any, ...], duration_s: float) -> None:
    previous_end = 0.0
    for word in words:
        assert previous_end <= word.start_s <= word.end_s <= duration_s + 1e-6
        previous_end = word.end_s


# --- the registry -------------------------------------------------------------------------


def test_every_http_kind_builds_with_router_kwargs_and_has_its_task_method():
    assert set(HTTP_KINDS) == set(MODELS)
    with simulator() as sim:
        for kind in HTTP_KINDS:
            adapter = build(kind, sim)
            info = adapter.info
            assert info.adapter_id == f"test-{kind}" and info.task == ADAPTER_KINDS[kind].task
            assert info.model == MODELS[kind] and info.model_version and info.provider
            assert info.max_concurrency == 4
            assert inspect.iscoroutinefunction(getattr(adapter, task_spec(info.task).method))
            asyncio.run(adapter.aclose())


def test_routing_config_names_the_http_adapters_and_the_resource_builds_them():
    from resources.model_router import ProviderResource
    from resources.routing_config import parse_routing_config

    with simulator() as sim:
        providers = "\n".join(
            f"  p-{kind}: {{adapter: {kind}, model: {MODELS[kind]}, base_url: '{sim.base_url}{SIM_PATHS.get(kind, '')}', "
            f"api_key_env: {KEY_ENV}, timeout_s: 5, max_concurrency: 3, options: {{model_version: v9}}}}"
            for kind in HTTP_KINDS
        )
        routes = {"concept": "openai-chat", "image": "fal-images", "refine": "comfyui-refine", "voice": "openai-speech"}
        tasks = "\n".join(f"  {task}: {{route: [p-{kind}]}}" for task, kind in routes.items())
        routing = parse_routing_config(
            f"version: 1\nproviders:\n{providers}\n  video: {{adapter: local-pyav}}\ntasks:\n{tasks}\n  video: {{route: [video]}}\n"
        )
        for kind in HTTP_KINDS:
            adapter = ProviderResource.from_config(f"p-{kind}", routing).build_adapter()
            assert isinstance(adapter, HttpAdapter)
            assert (adapter.info.adapter_id, adapter.info.model_version) == (f"p-{kind}", "v9")
            assert adapter.info.max_concurrency == 3 and adapter.timeout_s == 5


def test_unknown_option_and_bad_option_values_fail_at_build():
    with simulator() as sim:
        with pytest.raises(ValueError, match=r"unknown option 'voice_idd'"):
            build("elevenlabs-speech", sim, voice_idd="x")
        with pytest.raises(ValueError, match=r"option 'poll_interval_s' must be a number"):
            build("fal-images", sim, poll_interval_s="soon")
        with pytest.raises(ValueError, match="allowed_hosts entry"):
            build("fal-images", sim, allowed_hosts=("ftp://cdn.example.com",))


# --- happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["json_schema", "json_object"])
def test_openai_chat_writes_a_validated_concept(response_format):
    with simulator() as sim:
        result = call(build("openai-chat", sim, response_format=response_format))
        assert isinstance(result, ConceptResult)
        assert result.headline == "Meet Lumen Lamp"
        assert len(result.script.split()) == round(CONCEPT.duration_s * 2.6)
        assert result.caption_lines and " ".join(result.caption_lines).split() == result.script.split()
        assert "no text" in result.image_prompt
        assert result.input_tokens > 0 and result.output_tokens > 0
        assert sim.stats()["headers_seen"]["openai_chat"]["authorization"] == 1


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_openai_images_returns_the_requested_png(response_format):
    with simulator() as sim:
        result = call(build("openai-images", sim, response_format=response_format))
        assert isinstance(result, ImageResult)
        assert decoded(result.png).size == (IMAGE.width, IMAGE.height) == (result.width, result.height)
        assert sim.stats()["calls"].get("media.get", 0) == (1 if response_format == "url" else 0)


def test_openai_images_fits_another_size_to_the_exact_request():
    with simulator(image_size_override=(500, 500)) as sim:
        result = call(build("openai-images", sim, sizes="1024x1024,1024x1792,1792x1024"))
        assert decoded(result.png).size == (IMAGE.width, IMAGE.height)
    assert closest_size(288, 512, [(1024, 1024), (1024, 1792), (1792, 1024)]) == (1024, 1792)
    assert closest_size(512, 512, [(1024, 1024), (1024, 1792)]) == (1024, 1024)


@pytest.mark.parametrize("kind", QUEUE_KINDS + ["comfyui-images"])
def test_queue_and_comfyui_images_poll_until_done(kind):
    latency = {"job_latency": {"ms": 150}}
    with simulator(endpoints={GROUPS[kind]: latency}) as sim:
        started = time.perf_counter()
        result = call(build(kind, sim, poll_max_interval_s="0.02"))
        assert time.perf_counter() - started >= 0.15  # it waited for the job
        assert decoded(result.png).size == (IMAGE.width, IMAGE.height)
        stats = sim.stats()
        polls = {
            "replicate-images": "replicate.predictions.get",
            "fal-images": "fal.status",
            "gmi-images": "gmi.requests.get",
            "comfyui-images": "comfyui.history",
        }[kind]
        # In progress at first, then done (~7 polls at 20 ms; 2 unless the client stalled 130 ms).
        assert stats["calls"][polls] >= 2
        assert stats["jobs_submitted"] == 1


def test_replicate_accepts_a_single_output_url():
    with simulator(replicate_output="string") as sim:
        assert decoded(call(build("replicate-images", sim)).png).size == (IMAGE.width, IMAGE.height)


def test_replicate_version_option_is_the_model_version():
    with simulator() as sim:
        adapter = build("replicate-images", sim, version="5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa")
        assert adapter.info.model_version.startswith("5c7d5dc6")
        assert decoded(call(adapter).png).size == (IMAGE.width, IMAGE.height)


def test_comfyui_refine_uploads_the_draft_and_returns_the_target_size():
    with simulator() as sim:
        result = call(build("comfyui-refine", sim))
        expected = refine_size("9:16", 270, (144, 256))
        assert expected == (270, 480)
        assert decoded(result.png).size == expected == (result.width, result.height)
        assert sim.stats()["calls"]["comfyui.upload"] == 1
        with pytest.raises(ValueError, match="source_sha256"):
            call(build("comfyui-refine", sim), REFINE.model_copy(update={"source_sha256": "0" * 64}), SOURCE_PNG)


def test_comfyui_uses_a_workflow_file_with_placeholders(tmp_path):
    from model_adapters.http.comfyui import DEFAULT_IMAGE_WORKFLOW

    workflow = json.loads(json.dumps(DEFAULT_IMAGE_WORKFLOW))
    workflow["6"]["inputs"]["text"] = "studio photo, {{prompt}}"
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(workflow))
    with simulator() as sim:
        adapter = build("comfyui-images", sim, workflow_path=str(path))
        assert "workflow:flow.json" in adapter.info.capabilities
        assert decoded(call(adapter).png).size == (IMAGE.width, IMAGE.height)
        workflow["6"]["inputs"]["text"] = "{{mood}}"
        path.write_text(json.dumps(workflow))
        with pytest.raises(ValueError, match="unknown placeholders"):
            build("comfyui-images", sim, workflow_path=str(path))


def _check_voice(result: VoiceResult, sample_rate: int) -> np.ndarray:
    with wave.open(io.BytesIO(result.wav)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, sample_rate)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    samples = pcm.astype(np.float64) / 32768.0
    assert result.sample_rate == sample_rate
    assert math.isclose(result.duration_s, len(pcm) / sample_rate)
    assert [w.word for w in result.words] == VOICE.text.split()
    assert_monotonic(result.words, result.duration_s)
    lufs, peak = loudness.measure(samples, sample_rate)
    assert abs(lufs - VOICE.target_lufs) < 0.5 and abs(result.loudness_lufs - lufs) < 1e-6
    assert peak <= VOICE.true_peak_dbtp + 0.05
    return samples


def test_openai_speech_decodes_normalizes_and_estimates_word_timings():
    with simulator(speech="tones") as sim:  # word spans known exactly
        adapter = build("openai-speech", sim)
        assert "word_timings:estimated" in adapter.info.capabilities
        result = call(adapter)
        _check_voice(result, 24000)
        # The estimate lands close to where the simulator really put each word.
        truth = _word_spans(synth_speech(VOICE.text, 24000))
        for word, (start, end) in zip(result.words, truth, strict=False):
            assert abs(word.start_s - start) < 0.25 and abs(word.end_s - end) < 0.25
        assert result.characters == len(VOICE.text)


def _word_spans(speech: Any) -> list[tuple[float, float]]:
    text = "".join(speech.characters)
    import re

    return [(speech.starts[m.start()], speech.ends[m.end() - 1]) for m in re.finditer(r"\S+", text)]


def test_elevenlabs_turns_character_alignment_into_word_timings():
    with simulator(speech="tones") as sim:  # word spans known exactly
        result = call(build("elevenlabs-speech", sim, **{"voice_id:de-DE": "de-voice"}))
        _check_voice(result, 22050)
        truth = _word_spans(synth_speech(VOICE.text, 22050))
        for word, (start, end) in zip(result.words, truth, strict=False):
            assert word.start_s == pytest.approx(start, abs=1e-3) and word.end_s == pytest.approx(end, abs=1e-3)
        assert sim.stats()["headers_seen"]["elevenlabs"].get("xi-api-key") == 1
        assert "authorization" not in sim.stats()["headers_seen"]["elevenlabs"]


def test_elevenlabs_without_a_voice_for_the_locale_is_unsupported_input():
    with simulator() as sim:
        adapter = adapter_kind("elevenlabs-speech").build(
            adapter_id="el",
            max_concurrency=1,
            model=None,
            base_url=sim.base_url,
            api_key_env=KEY_ENV,
            timeout_s=5.0,
            allowed_hosts=(),
            options={"voice_id:de": "de-voice"},
        )
        assert isinstance(failure(adapter), UnsupportedInput)
        german = call(adapter, VOICE.model_copy(update={"locale": "de-DE"}))
        assert german.words
        assert sim.stats()["calls"]["elevenlabs.tts.with_timestamps"] == 1


def test_estimated_word_timings_snap_to_pauses():
    sample_rate = 16000
    t = np.arange(int(2.0 * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 150 * t)
    voiced = ((t > 0.1) & (t < 0.6)) | ((t > 1.0) & (t < 1.9))  # two phrases, a pause at 0.6-1.0
    words = estimate_word_timings("Hello there, my friend", tone * voiced, sample_rate)
    assert [w.word for w in words] == ["Hello", "there,", "my", "friend"]
    assert_monotonic(words, 2.0)
    assert words[1].end_s == pytest.approx(0.6, abs=0.011) and words[2].start_s == pytest.approx(1.0, abs=0.011)


# --- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, RetryableError),
        (502, RetryableError),
        (503, RetryableError),
        (504, RetryableError),
        (408, RetryableError),
        (409, RetryableError),
        (401, AuthError),
        (403, AuthError),
        (422, UnsupportedInput),
        (400, FatalProviderError),
        (404, FatalProviderError),
    ],
)
def test_http_status_maps_to_the_typed_error(status, expected):
    with simulator(**faults("openai_images", server_error=1.0, server_error_status=status)) as sim:
        error = failure(build("openai-images", sim))
        assert type(error) is expected
        assert error.status == status and error.provider == "openai-compatible"
        assert f"HTTP {status}" in str(error) and "POST /v1/images/generations" in str(error)
        assert error.retryable is (expected is RetryableError)


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_5xx_is_retryable_on_every_adapter(kind):
    with simulator(**faults(GROUPS[kind], server_error=1.0, server_error_status=502)) as sim:
        error = failure(build(kind, sim))
        assert type(error) is RetryableError and error.status == 502


@pytest.mark.parametrize("fmt", ["seconds", "http-date", "ms"])
def test_429_is_rate_limited_with_the_providers_retry_after(fmt):
    with simulator(**faults("openai_chat", rate_limit=1.0, retry_after_s=7, retry_after_format=fmt)) as sim:
        error = failure(build("openai-chat", sim))
        assert isinstance(error, RateLimited) and error.status == 429
        tolerance = 1.5 if fmt == "http-date" else 1e-6  # an HTTP date has whole seconds
        assert error.retry_after_s == pytest.approx(7.0, abs=tolerance)


@pytest.mark.parametrize("kind", ["openai-chat", "elevenlabs-speech", "fal-images"])
def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(kind):
    with simulator(api_key="sk-the-right-one") as sim:
        # The simulator echoes the presented key, as some providers do...
        raw = httpx.post(f"{sim.base_url}/v1/chat/completions", headers={"authorization": f"Bearer {CANARY}"}, json={})
        assert raw.status_code == 401 and CANARY in raw.text
        # ...and the adapter's error must not.
        adapter = build(kind, sim)
        error = failure(adapter)
        assert isinstance(error, AuthError) and error.status == 401 and not error.retryable
        assert "[redacted]" in str(error)
        assert_no_secret(error, adapter, adapter.info)


def test_a_missing_key_variable_is_an_auth_error_before_any_request(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with simulator() as sim:
        error = failure(build("openai-images", sim))
        assert isinstance(error, AuthError) and KEY_ENV in str(error)
        assert sim.stats()["calls"] == {}


def test_the_key_stays_out_of_every_error_and_repr():
    errors = []
    with simulator(**faults("openai_chat", server_error=1.0, server_error_status=500)) as sim:
        errors.append(failure(build("openai-chat", sim)))
    with simulator(**faults("openai_chat", timeout=1.0, timeout_s=2.0)) as sim:
        errors.append(failure(build("openai-chat", sim, timeout_s=0.2)))
    with simulator(down="refuse") as sim:
        adapter = build("openai-chat", sim)
        errors.append(failure(adapter))
    assert [type(e) for e in errors] == [RetryableError, ProviderTimeout, RetryableError]
    assert_no_secret(*errors, adapter, adapter.info, adapter.options.keys())


def test_a_slow_provider_is_a_provider_timeout():
    with simulator(**faults("openai_speech", timeout=1.0, timeout_s=3.0)) as sim:
        started = time.perf_counter()
        error = failure(build("openai-speech", sim, timeout_s=0.3))
        assert isinstance(error, ProviderTimeout) and error.retryable
        assert time.perf_counter() - started < 2.0


def test_a_queue_job_past_the_deadline_is_a_provider_timeout():
    with simulator(endpoints={"gmi": {"job_latency": {"ms": 5000}}}) as sim:
        started = time.perf_counter()
        error = failure(build("gmi-images", sim, timeout_s=0.8))
        assert isinstance(error, ProviderTimeout) and "no result within 0.8 s" in str(error)
        assert time.perf_counter() - started < 3.0
        assert sim.stats()["calls"]["gmi.requests.get"] >= 1  # polled, always in progress


@pytest.mark.parametrize(
    ("kind", "group", "kind_of_fault"),
    [
        ("openai-chat", "openai_chat", "auto"),  # truncated JSON
        ("openai-images", "openai_images", "auto"),  # a b64 PNG that does not decode
        ("openai-images", "openai_images", "truncated_json"),
        ("openai-speech", "openai_speech", "auto"),  # a WAV with a wrong header
        ("elevenlabs-speech", "elevenlabs", "auto"),
        ("replicate-images", "media", "auto"),  # the downloaded PNG does not decode
        ("fal-images", "fal", "auto"),
        ("gmi-images", "gmi", "truncated_json"),
        ("comfyui-images", "comfyui", "auto"),
    ],
)
def test_malformed_bodies_and_media_are_malformed_response(kind, group, kind_of_fault):
    with simulator(**faults(group, malformed=1.0, malformed_kind=kind_of_fault)) as sim:
        error = failure(build(kind, sim))
        assert isinstance(error, MalformedResponse) and error.retryable


@pytest.mark.parametrize(
    "kind",
    [
        "openai-chat",
        "openai-images",
        "openai-speech",
        "elevenlabs-speech",
        "replicate-images",
        "fal-images",
        "gmi-images",
    ],
)
def test_content_policy_refusals_are_content_policy_errors(kind):
    with simulator(**faults(GROUPS[kind], content_policy=1.0)) as sim:
        error = failure(build(kind, sim))
        assert isinstance(error, ContentPolicyError) and not error.retryable


@pytest.mark.parametrize("kind", QUEUE_KINDS + ["comfyui-images"])
def test_a_failed_job_is_a_fatal_provider_error(kind):
    with simulator(**faults(GROUPS[kind], job_failure=1.0)) as sim:
        error = failure(build(kind, sim))
        assert type(error) is FatalProviderError and "failed" in str(error)


def test_a_provider_that_is_down():
    with simulator(down="refuse") as sim:
        error = failure(build("openai-images", sim))
        assert type(error) is RetryableError and error.status is None and "ConnectError" in str(error)
    with simulator(down="503") as sim:
        error = failure(build("replicate-images", sim))
        assert type(error) is RetryableError and error.status == 503


# --- media allow-list -----------------------------------------------------------------------


@pytest.mark.parametrize("foreign", ["http://127.0.0.2:{port}", "http://169.254.169.254", "http://127.0.0.1:1"])
@pytest.mark.parametrize("kind", ["openai-images", *QUEUE_KINDS])
def test_media_on_a_foreign_origin_is_refused_and_never_fetched(kind, foreign):
    with simulator() as sim:
        port = sim.base_url.rsplit(":", 1)[1]
        sim.configure(SimulatorSettings(api_key=CANARY, media_base_url=foreign.format(port=port)))
        options = {"response_format": "url"} if kind == "openai-images" else {}
        error = failure(build(kind, sim, **options))
        assert isinstance(error, MediaURLRefused) and isinstance(error, UnsupportedInput) and not error.retryable
        assert "origin not allowed" in str(error)
        assert sim.stats()["calls"].get("media.get", 0) == 0


def test_a_redirect_to_a_foreign_origin_is_refused():
    with simulator() as sim:
        sim.configure(SimulatorSettings(api_key=CANARY, media_redirect_to="http://169.254.169.254"))
        error = failure(build("replicate-images", sim))
        assert isinstance(error, MediaURLRefused) and "redirect" in str(error)
        assert sim.stats()["calls"]["media.get"] == 1  # the 302 itself, nothing after it


def test_allowed_origins_compare_scheme_host_and_port_exactly():
    assert parse_allowed_host("cdn.example.com") == ("https", "cdn.example.com", 443)
    assert parse_allowed_host("cdn.example.com:8443") == ("https", "cdn.example.com", 8443)
    assert parse_allowed_host("http://127.0.0.1:8199") == ("http", "127.0.0.1", 8199)
    with simulator() as sim:
        adapter: HttpAdapter = build("replicate-images", sim, allowed_hosts=("cdn.example.com", "http://10.0.0.5:9000"))
        port = int(sim.base_url.rsplit(":", 1)[1])
        allowed = [
            f"{sim.base_url}/x.png",
            "https://cdn.example.com/a.png",
            "https://CDN.example.com:443/a.png",
            "http://10.0.0.5:9000/a",
        ]
        refused = [
            f"http://127.0.0.1:{port + 1}/x.png",
            f"https://127.0.0.1:{port}/x.png",
            f"http://user:pw@127.0.0.1:{port}/x.png",
            "http://cdn.example.com/a.png",
            "https://cdn.example.com:8443/a.png",
            "https://evil.cdn.example.com/a.png",
            "http://10.0.0.5/a",
            "file:///etc/passwd",
        ]
        for url in allowed:
            assert adapter._checked_url(url, "test")
        for url in refused:
            with pytest.raises(MediaURLRefused):
                adapter._checked_url(url, "test")


# --- concurrency and clients --------------------------------------------------------------------


def _burst(adapter: Any, count: int) -> list[Any]:
    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(adapter.generate(IMAGE) for _ in range(count)), return_exceptions=True)
        finally:
            await adapter.aclose()

    return asyncio.run(main())


def test_the_simulators_cap_answers_429_and_the_adapter_limits_connections():
    settings = {
        "max_concurrency": 2,
        "concurrency_retry_after_s": 3,
        "endpoints": {"openai_images": {"latency": {"ms": 200}}},
    }
    with simulator(**settings) as sim:
        results = _burst(build("openai-images", sim, max_concurrency=6), 6)
        limited = [r for r in results if isinstance(r, RateLimited)]
        assert limited and all(r.retry_after_s == 3 for r in limited)
        assert all(isinstance(r, (ImageResult, RateLimited)) for r in results)
        stats = sim.stats()
        assert stats["max_in_flight"]["openai_images"] == 2
        assert stats["rejected_over_cap"]["openai_images"] == len(limited)

        sim.reset_stats()
        results = _burst(build("openai-images", sim, max_concurrency=2), 6)
        assert all(isinstance(r, ImageResult) for r in results)
        assert sim.stats()["max_in_flight"]["openai_images"] <= 2  # httpx.Limits(max_connections=2)
        assert sim.stats()["rejected_over_cap"] == {}


def test_one_adapter_serves_several_event_loops():
    """A client belongs to the loop that made it: after aclose in one loop, the
    same adapter works in the next (as router sessions in successive steps do)."""
    with simulator() as sim:
        adapter = build("openai-chat", sim)

        async def write_and_close() -> ConceptResult:
            try:
                return await adapter.write(CONCEPT)
            finally:
                await adapter.aclose()

        assert asyncio.run(write_and_close()) == asyncio.run(write_and_close())
        assert sim.stats()["calls"]["openai.chat.completions"] == 2


# --- helpers --------------------------------------------------------------------------------------


def test_retry_after_parsing():
    now = 1_000_000.0
    assert parse_retry_after({"retry-after": "12"}) == 12.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Mon, 12 Jan 1970 13:46:50 GMT"}, now=now) == pytest.approx(10.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_media_decoders_reject_what_does_not_decode():
    from model_adapters.http.base import MediaError
    from model_adapters.simulator.server import bad_wav, broken_png, encode_wav16

    with pytest.raises(MediaError):
        fit_png(broken_png(32, 32), 32, 32)
    with pytest.raises(MediaError):
        fit_png(b"not an image", 32, 32)
    wav = encode_wav16(np.zeros(100, dtype=np.float32) + 0.1, 16000)
    samples, rate = decode_wav(wav)
    assert rate == 16000 and len(samples) == 100
    with pytest.raises(MediaError, match="bad header"):
        decode_wav(bad_wav(wav))
    good = render_png("x", 64, 32)
    assert fit_png(good, 64, 32).png == good  # the right PNG passes byte for byte
    assert decoded(fit_png(good, 20, 40).png).size == (20, 40)
