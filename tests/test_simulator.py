"""The provider simulator itself: settings, real media, latency, faults, the
concurrency cap, stats, and the CLI. Plain httpx clients on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from model_adapters.simulator.server import synth_speech
from tests.conftest import PROJECT_ROOT

KEY = "sim-secret-4b1f9e0c77d2"
AUTH = {"authorization": f"Bearer {KEY}"}

EXAMPLE_YAML = """
seed: 3
api_key: sim-secret-4b1f9e0c77d2
max_concurrency: 8
default:
  latency: {distribution: uniform, low_ms: 1, high_ms: 5}
endpoints:
  openai_images:
    faults: {server_error: 0.1, rate_limit: 0.05, retry_after_s: 2}
  replicate:
    job_latency: {distribution: lognormal, median_ms: 40, sigma: 0.3, max_ms: 200}
"""


def test_settings_load_from_yaml_and_json_and_merge_endpoint_overrides(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text(EXAMPLE_YAML)
    settings = SimulatorSettings.from_file(path)
    images = settings.for_group("openai_images")
    assert images.faults.server_error == 0.1 and images.latency.distribution == "uniform"  # default merged in
    assert settings.for_group("replicate").job_latency.median_ms == 40
    assert settings.for_group("fal") == settings.default
    as_json = tmp_path / "sim.json"
    as_json.write_text(json.dumps(json.loads(json.dumps(__import__("yaml").safe_load(EXAMPLE_YAML)))))
    assert SimulatorSettings.from_file(as_json) == settings
    # The expected key never shows in a repr or a dump.
    assert KEY not in repr(settings) and KEY not in settings.to_json()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"default": {"faults": {"server_error": 0.7, "rate_limit": 0.5}}}, "sum to 1.2"),
        ({"endpoints": {"openai_video": {}}}, "openai_video"),
        ({"default": {"latency": {"distribution": "uniform", "low_ms": 5, "high_ms": 1}}}, "high_ms"),
        ({"lag_ms": 5}, "lag_ms"),
    ],
)
def test_bad_settings_are_rejected_with_the_field(data, message):
    with pytest.raises(ValidationError, match=message):
        SimulatorSettings.model_validate(data)


def test_latency_draws_are_seeded():
    def draws(seed: int) -> list[float]:
        settings = SimulatorSettings(seed=seed, default={"latency": {"distribution": "lognormal", "median_ms": 20, "sigma": 0.5}})
        sim = ProviderSimulator(settings)
        return [sim._sample(settings.default.latency) for _ in range(5)]

    assert draws(1) == draws(1) != draws(2)
    sim = ProviderSimulator()
    uniform = sim.settings.default.latency.model_copy(update={"distribution": "uniform", "low_ms": 10, "high_ms": 20})
    assert all(0.010 <= sim._sample(uniform) <= 0.020 for _ in range(50))


def test_fixed_latency_is_applied():
    with ProviderSimulator(SimulatorSettings(default={"latency": {"ms": 80}})) as sim:
        started = time.perf_counter()
        reply = httpx.post(
            f"{sim.base_url}/v1/images/generations",
            json={"prompt": "x", "size": "64x64", "response_format": "b64_json"},
        )
        assert reply.status_code == 200 and time.perf_counter() - started >= 0.075


def test_images_are_real_pngs_of_the_requested_size_and_deterministic():
    with ProviderSimulator() as sim:

        def image(prompt: str, size: str = "160x90") -> bytes:
            body = {"model": "m", "prompt": prompt, "size": size, "response_format": "b64_json"}
            reply = httpx.post(f"{sim.base_url}/v1/images/generations", json=body)
            return base64.b64decode(reply.json()["data"][0]["b64_json"])

        first = image("a red bicycle")
        decoded = Image.open(io.BytesIO(first))
        decoded.load()
        assert decoded.format == "PNG" and decoded.size == (160, 90)
        assert image("a red bicycle") == first != image("a blue boat")
        assert httpx.post(f"{sim.base_url}/v1/images/generations", json={"prompt": "x", "size": "9000x10"}).status_code == 422


def test_speech_duration_follows_the_text_and_alignment_matches_the_audio():
    short, long = synth_speech("Hello there.", 22050), synth_speech("Hello there. " * 6, 22050)
    assert 4.5 < long.duration_s / short.duration_s < 6.5
    text = "Bright light, calm nights."
    speech = synth_speech(text, 22050)
    assert "".join(speech.characters) == text
    assert speech.starts == sorted(speech.starts) and all(s <= e for s, e in zip(speech.starts, speech.ends, strict=False))
    assert speech.duration_s - speech.ends[-1] == pytest.approx(0.2, abs=1e-3)  # a tail of silence
    rms = lambda a, b: float(np.sqrt(np.mean(speech.samples[int(a * 22050) : int(b * 22050)] ** 2)))  # noqa: E731
    for match in re.finditer(r"\S+", text):
        start, end = speech.starts[match.start()], speech.ends[match.end() - 1]
        assert rms(start, end) > 0.05  # words are voiced
    gap = (speech.ends[text.index(",")], speech.starts[text.index("calm")])
    assert gap[1] - gap[0] >= 0.2 and rms(*gap) < 1e-6  # the comma is a pause


def test_openai_speech_and_elevenlabs_endpoints():
    with ProviderSimulator() as sim:
        reply = httpx.post(
            f"{sim.base_url}/v1/audio/speech",
            json={"model": "m", "voice": "alloy", "input": "Hi there.", "response_format": "wav"},
        )
        assert reply.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(reply.content)) as wav:
            assert wav.getframerate() == 24000 and wav.getnframes() > 0
        reply = httpx.post(
            f"{sim.base_url}/v1/text-to-speech/v1ce/with-timestamps",
            params={"output_format": "pcm_16000"},
            json={"text": "Hi there."},
        )
        body = reply.json()
        pcm = base64.b64decode(body["audio_base64"])
        duration = len(pcm) / 2 / 16000
        assert 0 < duration - body["alignment"]["character_end_times_seconds"][-1] < 0.25
        assert httpx.post(f"{sim.base_url}/v1/audio/speech", json={"model": "m", "voice": "a", "input": "x"}).status_code == 400


def test_chat_answers_a_concept_of_the_requested_length():
    with ProviderSimulator() as sim:
        brief = {"product": "Kettle", "audience": "tea people", "target_words": 17}
        body = {"model": "m", "messages": [{"role": "user", "content": "Brief (JSON):\n" + json.dumps(brief)}]}
        content = json.loads(httpx.post(f"{sim.base_url}/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"])
        assert set(content) == {"headline", "script", "image_prompt", "caption_lines"}
        assert len(content["script"].split()) == 17 and "Kettle" in content["headline"]


def test_queue_jobs_are_in_progress_until_their_latency_has_passed():
    settings = SimulatorSettings(endpoints={"replicate": {"job_latency": {"ms": 300}}})
    with ProviderSimulator(settings) as sim:
        created = httpx.post(f"{sim.base_url}/v1/predictions", json={"version": "v", "input": {"prompt": "p", "width": 64, "height": 64}})
        assert created.status_code == 201
        get_url = created.json()["urls"]["get"]
        assert httpx.get(get_url).json()["status"] in ("starting", "processing")
        time.sleep(0.35)
        done = httpx.get(get_url).json()
        assert done["status"] == "succeeded"
        media = httpx.get(done["output"][0])
        assert media.status_code == 200 and Image.open(io.BytesIO(media.content)).size == (64, 64)


def test_fault_sequence_then_rates():
    settings = SimulatorSettings(
        endpoints={
            "openai_chat": {
                "faults": {
                    "sequence": ["server_error", "rate_limit", "ok"],
                    "server_error_status": 502,
                    "retry_after_s": 4,
                }
            }
        }
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ProviderSimulator(settings) as sim:
        replies = [httpx.post(f"{sim.base_url}/v1/chat/completions", json=body) for _ in range(4)]
        assert [r.status_code for r in replies] == [502, 429, 200, 200]
        assert replies[1].headers["retry-after"] == "4"
        assert sim.stats()["faults"]["openai_chat"] == {"server_error": 1, "rate_limit": 1, "ok": 2}


def test_malformed_kinds():
    settings = SimulatorSettings(endpoints={"openai_speech": {"faults": {"malformed": 1.0}}, "openai_chat": {"faults": {"malformed": 1.0}}})
    with ProviderSimulator(settings) as sim:
        wav = httpx.post(
            f"{sim.base_url}/v1/audio/speech",
            json={"model": "m", "voice": "a", "input": "Hi.", "response_format": "wav"},
        )
        assert wav.content[:4] == b"RIFX"
        chat = httpx.post(f"{sim.base_url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        with pytest.raises(json.JSONDecodeError):
            json.loads(chat.content)


def test_api_key_is_required_and_only_its_presence_is_recorded():
    with ProviderSimulator(SimulatorSettings(api_key=KEY)) as sim:
        url = f"{sim.base_url}/v1/images/generations"
        body = {"prompt": "x", "size": "32x32"}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.post(url, json=body, headers=AUTH).status_code == 200
        assert httpx.post(f"{sim.base_url}/fal/m", json={"prompt": "x"}, headers={"authorization": f"Key {KEY}"}).status_code == 200
        over_http = httpx.get(f"{sim.base_url}/_sim/stats")
        stats = over_http.json()
        assert stats == sim.stats()
        assert stats["auth_failures"] == 2 and stats["headers_seen"]["openai_images"]["authorization"] == 2
        assert stats["statuses"]["401"] == 2 and stats["bytes_sent"] > 0
        assert KEY not in over_http.text


def test_the_concurrency_cap_answers_429_and_max_in_flight_is_recorded():
    settings = SimulatorSettings(max_concurrency=2, concurrency_retry_after_s=2, default={"latency": {"ms": 400}})
    with ProviderSimulator(settings) as sim:
        statuses: list[int] = []
        retry_after: list[str] = []

        def one() -> None:
            reply = httpx.post(f"{sim.base_url}/v1/images/generations", json={"prompt": "x", "size": "32x32"})
            statuses.append(reply.status_code)
            retry_after.append(reply.headers.get("retry-after", ""))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 200, 429, 429, 429]
        assert retry_after.count("2") == 3
        stats = sim.stats()
        assert stats["max_in_flight"]["openai_images"] == 2 and stats["rejected_over_cap"]["openai_images"] == 3
        assert stats["in_flight"]["openai_images"] == 0


def test_a_provider_that_is_down():
    with ProviderSimulator(SimulatorSettings(down="refuse")) as sim:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sim.base_url}/_sim/stats")
    with ProviderSimulator(SimulatorSettings(down="503")) as sim:
        assert httpx.post(f"{sim.base_url}/v1/predictions", json={}).status_code == 503


def test_stop_is_prompt_while_a_request_stalls():
    settings = SimulatorSettings(endpoints={"openai_chat": {"faults": {"timeout": 1.0, "timeout_s": 30}}})
    sim = ProviderSimulator(settings).start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{sim.base_url}/v1/chat/completions", json={"model": "m", "messages": []}, timeout=0.2)
    finally:
        started = time.perf_counter()
        sim.stop()
        assert time.perf_counter() - started < 2.0


def _start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SIM_TEST_KEY": KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "model_adapters.simulator", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_starts_answers_and_stops_cleanly(tmp_path: Path):
    settings = tmp_path / "sim.yaml"
    settings.write_text("seed: 1\ndefault:\n  latency: {ms: 1}\n")
    process = _start_cli("--port", "0", "--settings", str(settings), "--api-key-env", "SIM_TEST_KEY", "--set", "max_concurrency=3")
    try:
        line = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line + process.stderr.read()
        base_url = match.group(1)
        assert httpx.post(f"{base_url}/v1/images/generations", json={"prompt": "x", "size": "32x32"}).status_code == 401
        assert httpx.post(f"{base_url}/v1/images/generations", json={"prompt": "x", "size": "32x32"}, headers=AUTH).status_code == 200
        assert httpx.get(f"{base_url}/_sim/stats").json()["calls"]["openai.images.generations"] == 2
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "provider simulator stopped" in out


def test_cli_rejects_bad_settings(tmp_path: Path):
    settings = tmp_path / "bad.yaml"
    settings.write_text("default:\n  faults: {server_error: 2}\n")
    process = _start_cli("--settings", str(settings))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "server_error" in err
