"""The provider simulator's HTTP server (stdlib `ThreadingHTTPServer` in a background thread).

Request flow: route -> count the call and which auth headers were present ->
``down: "503"`` -> API key check (401) -> concurrency cap per endpoint group
(429) -> latency -> the drawn fault (5xx, 429 with Retry-After, a stall past
the client's timeout, a malformed body, a content-policy refusal, a failed
job) -> the endpoint's answer. Queue jobs (Replicate, fal, GMI, ComfyUI)
complete after the group's ``job_latency``; polls answer "in progress" until
then. Media is real: PNGs drawn with numpy from the prompt's hash at the
requested size, speech-like WAV/PCM (one tone burst per syllable) whose length
follows the text, with ElevenLabs character alignment that matches the audio;
fal's ``fal-ai/ffmpeg-api/compose`` answers a real H.264 + AAC MP4 of the
still and the audio it was sent (encoded with PyAV when the result is first
fetched, never at import).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import itertools
import json
import math
import random
import re
import socket
import struct
import textwrap
import threading
import time
import uuid
import wave
import zlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from model_adapters.pcm import decode_wav, encode_wav
from model_adapters.simulator import FAULT_RATES, Latency, SimulatorSettings

# Request headers whose presence (never value) is counted per group.
WATCHED_HEADERS = ("authorization", "xi-api-key", "content-type", "user-agent", "accept")
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_STORED_MEDIA = 512
JSON_TYPE = "application/json"


# --- media ------------------------------------------------------------------------------


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
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", garbage, crc=0)
        + _png_chunk(b"IEND", b"")
    )


def encode_wav16(samples: np.ndarray, sample_rate: int) -> bytes:
    return encode_wav(np.frombuffer(pcm16(samples), dtype="<i2"), sample_rate)


def pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()


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
    for (_, _, word), (start, end) in zip(words, spans):
        _burst_word(samples, sample_rate, word, start, end)

    starts = [0.0] * len(text)
    ends = [0.0] * len(text)
    cursor_char, cursor_time = 0, 0.0
    for (first, last, _), (start, end) in zip(words, spans):
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

    result = asyncio.run(_piper_voice().synthesize(
        VoiceRequest(text=text, locale="en-US", voice="default", speed=min(1.15, max(0.85, speed)))
    ))
    pcm, _ = decode_wav(result.wav)
    if result.sample_rate != sample_rate:
        times = np.arange(round(len(pcm) * sample_rate / result.sample_rate)) / sample_rate
        pcm = np.interp(times, np.arange(len(pcm)) / result.sample_rate, pcm).astype(np.float32)
    total = len(pcm) / sample_rate
    starts, ends = [0.0] * len(text), [0.0] * len(text)
    cursor_char, cursor_time = 0, 0.0
    for match, word in zip(re.finditer(r"\S+", text), result.words):
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


def simulated_speech(call: "Call", text: str, sample_rate: int, speed: float) -> Speech:
    if call.sim.settings.speech == "tones":
        return synth_speech(text, sample_rate, call.sim.settings.seconds_per_letter / speed)
    return spoken_speech(text, sample_rate, speed)


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


_SENTENCES = (
    "It fits into your day without asking for attention.",
    "Every detail is tuned to feel right.",
    "Set it up in minutes and forget the manual.",
    "It works the way you already do.",
    "Small choices add up, and this one adds up fast.",
    "Quiet when you want calm, bold when you need it.",
    "Honest materials, clear design, nothing extra.",
    "People who try it tend to keep it.",
    "Less setup, fewer steps, more of what matters.",
)


def synth_concept(brief: dict[str, Any], seed: int) -> dict[str, Any]:
    """A valid concept whose script has exactly ``target_words`` words."""
    product = str(brief.get("product") or "the product")
    audience = str(brief.get("audience") or "everyone")
    tone = str(brief.get("tone") or "warm")
    palette = ", ".join(str(c) for c in brief.get("palette") or []) or "brand colours"
    target = max(3, int(brief.get("target_words") or 40))
    banned = [str(t).lower() for t in brief.get("banned_terms") or []]
    rng = random.Random(f"{seed}|{product}|{audience}")
    bank = [s for s in _SENTENCES if not any(b in s.lower() for b in banned)] or ["It is here."]
    sentences = [f"Meet {product}, made for {audience}."]
    while sum(len(s.split()) for s in sentences) < target:
        sentences.append(rng.choice(bank))
    words = " ".join(sentences).split()[:target]
    script = " ".join(words).rstrip(",;:") + ("" if words[-1][-1] in ".!?" else ".")
    return {
        "headline": f"Meet {product}",
        "script": script,
        "image_prompt": f"{product} for {audience}, {tone} mood, palette {palette}, soft light, clean composition, no text",
        "caption_lines": textwrap.wrap(script, 42),
    }


_PLACEHOLDER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."


def synth_off_brief_concept(brief: dict[str, Any]) -> dict[str, Any]:
    """Well-formed, schema-valid and off-brief: placeholder copy of the right length, as a mock
    or a model that ignored its prompt answers. The same whatever the seed."""
    target = max(3, int(brief.get("target_words") or 40))
    words = (_PLACEHOLDER.split() * (target // len(_PLACEHOLDER.split()) + 1))[:target]
    script = " ".join(words).rstrip(",;:") + ("" if words[-1][-1] in ".!?" else ".")
    return {
        "headline": "Placeholder headline",
        "script": script,
        "image_prompt": "placeholder image, stock photo",
        "caption_lines": textwrap.wrap(script, 42),
    }


def off_brief(share: float, seed: int) -> bool:
    """Whether the answer for `seed` is off-brief: a fixed share of seeds, the same on every run."""
    return share > 0 and random.Random(f"off-brief|{seed}").random() < share


# --- request / response -----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode(), JSON_TYPE)


def error_reply(status: int, message: str, code: str = "error", shape: str = "openai") -> Reply:
    if shape == "detail":
        return json_reply({"detail": {"status": code, "message": message}}, status)
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return json_reply({"error": {"message": message, "type": kind, "code": code}}, status)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Call:
    """What a handler sees of one request."""

    sim: "ProviderSimulator"
    group: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    fault: str
    corrupted: bool = False  # a handler already made the media malformed

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return data

    def corrupt_media(self) -> bool:
        """Whether this answer's media must be malformed (a broken PNG, a bad WAV
        header) instead of its JSON being truncated; marks the call as done."""
        kind = self.sim.settings.for_group(self.group).faults.malformed_kind
        if self.fault == "malformed" and kind in ("auto", "broken_png", "bad_wav", "broken_mp4"):
            self.corrupted = True
        return self.corrupted

    def png(self, prompt: str, width: int, height: int, seed: int) -> bytes:
        override = self.sim.settings.image_size_override
        width, height = override if override else (width, height)
        if self.corrupt_media():
            return broken_png(width, height)
        return render_png(prompt, width, height, seed)


@dataclass
class Job:
    id: str
    group: str
    submitted_at: float
    ready_at: float
    outcome: str  # "ok", "failed", "policy"
    media_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at


def _size(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
        if not match:
            raise BadRequest(f"invalid size {value!r}; expected WxH", code="invalid_size")
        return int(match.group(1)), int(match.group(2))
    if isinstance(value, dict):
        return int(value.get("width", default[0])), int(value.get("height", default[1]))
    return default


def _check_size(width: int, height: int) -> tuple[int, int]:
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise BadRequest(f"size {width}x{height} is outside 16..4096", status=422, code="unsupported_size")
    return width, height


# --- endpoints ----------------------------------------------------------------------------


def _first_json_object(text: str) -> dict[str, Any]:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return {}


def openai_chat(call: Call) -> Reply:
    body = call.json()
    messages = body.get("messages")
    if not body.get("model") or not isinstance(messages, list) or not messages:
        raise BadRequest("model and messages are required")
    texts = [m.get("content") for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    brief = _first_json_object(users[-1] if users and isinstance(users[-1], str) else "")
    if "target_words" not in brief:
        match = re.search(r"(\d+)\s+words", " ".join(texts))
        brief["target_words"] = int(match.group(1)) if match else 40
    seed = int(body.get("seed") or 0)
    concept = synth_off_brief_concept(brief) if off_brief(call.sim.settings.off_brief_share, seed) else synth_concept(brief, seed)
    content = json.dumps(concept, ensure_ascii=False)
    prompt_tokens = max(1, sum(len(t) for t in texts) // 4)
    completion_tokens = max(1, len(content) // 4)
    return json_reply(
        {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def openai_images(call: Call) -> Reply:
    body = call.json()
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt is required")
    width, height = _check_size(*_size(body.get("size", "1024x1024"), (1024, 1024)))
    png = call.png(prompt, width, height, int(body.get("seed") or 0))
    if body.get("response_format", "url") == "b64_json":
        item = {"b64_json": base64.b64encode(png).decode(), "revised_prompt": prompt}
    else:
        item = {"url": call.sim.store_media(png, "image/png")}
    return json_reply({"created": int(time.time()), "data": [item]})


def _speed(value: object, low: float, high: float) -> float:
    """A speech request's `speed`, refused outside the provider's documented range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"speed must be a number in [{low}, {high}], got {value!r}", status=422 if low == 0.7 else 400)
    return float(value)


def openai_speech(call: Call) -> Reply:
    body = call.json()
    text = body.get("input")
    if not isinstance(text, str) or not text.strip() or not body.get("voice") or not body.get("model"):
        raise BadRequest("model, voice and input are required")
    fmt = body.get("response_format", "mp3")
    if fmt not in ("wav", "pcm"):
        raise BadRequest(f"response_format {fmt!r} is not simulated (wav, pcm)", code="unsupported_response_format")
    speed = _speed(body.get("speed", 1.0), 0.25, 4.0)
    speech = simulated_speech(call, text, call.sim.settings.speech_sample_rate, speed)
    if fmt == "pcm":
        return Reply(200, pcm16(speech.samples), "audio/pcm")
    wav = encode_wav16(speech.samples, speech.sample_rate)
    return Reply(200, bad_wav(wav) if call.corrupt_media() else wav, "audio/wav")


def elevenlabs_speech(call: Call) -> Reply:
    body = call.json()
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text is required", status=422, code="invalid_text")
    output_format = (call.query.get("output_format") or ["mp3_44100_128"])[0]
    match = re.fullmatch(r"pcm_(16000|22050|24000|44100)", output_format)
    if not match:
        raise BadRequest(
            f"output_format {output_format!r} is not simulated (pcm_*)", status=422, code="unsupported_output_format"
        )
    settings = body.get("voice_settings") or {}
    speed = _speed(settings.get("speed", 1.0) if isinstance(settings, dict) else 1.0, 0.7, 1.2)
    speech = simulated_speech(call, text, int(match.group(1)), speed)
    alignment = {
        "characters": speech.characters,
        "character_start_times_seconds": speech.starts,
        "character_end_times_seconds": speech.ends,
    }
    return json_reply(
        {
            "audio_base64": base64.b64encode(pcm16(speech.samples)).decode(),
            "alignment": alignment,
            "normalized_alignment": alignment,
        }
    )


# Queues ---------------------------------------------------------------------------------


def _job_png(call: Call, prompt: str, width: int, height: int, seed: int) -> list[str]:
    _check_size(width, height)
    return [call.sim.store_media(call.png(prompt, width, height, seed), "image/png", key=True)]


def replicate_submit(call: Call) -> Reply:
    body = call.json()
    model_input = body.get("input")
    if (
        not (body.get("version") or body.get("model"))
        or not isinstance(model_input, dict)
        or not model_input.get("prompt")
    ):
        raise BadRequest("version (or model) and input.prompt are required", status=422)
    width, height = int(model_input.get("width", 1024)), int(model_input.get("height", 1024))
    job = call.sim.new_job(
        call, _job_png(call, str(model_input["prompt"]), width, height, int(model_input.get("seed") or 0))
    )
    job.info["version"] = str(body.get("version") or body.get("model"))
    return json_reply(_prediction(call.sim, job), 201)


def _prediction(sim: "ProviderSimulator", job: Job) -> dict[str, Any]:
    status, output, error = "processing", None, None
    if time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3:
        status = "starting"
    if job.ready():
        if job.outcome == "ok":
            urls = [sim.media_url(m) for m in job.media_ids]
            status, output = "succeeded", urls if sim.settings.replicate_output == "list" else urls[0]
        else:
            status = "failed"
            error = (
                "NSFW content detected. Try a different prompt."
                if job.outcome == "policy"
                else "CUDA error: simulated failure"
            )
    return {
        "id": job.id,
        "version": job.info.get("version"),
        "status": status,
        "output": output,
        "error": error,
        "urls": {
            "get": f"{sim.base_url}/v1/predictions/{job.id}",
            "cancel": f"{sim.base_url}/v1/predictions/{job.id}/cancel",
        },
    }


def replicate_get(call: Call) -> Reply:
    return json_reply(_prediction(call.sim, call.sim.job(call.params["id"], "replicate")))


def fal_submit(call: Call) -> Reply:
    if call.params["model"] == FAL_COMPOSE_MODEL:
        return fal_compose_submit(call)
    body = call.json()
    if not body.get("prompt"):
        raise BadRequest("prompt is required", status=422)
    width, height = _size(body.get("image_size"), (1024, 768))
    job = call.sim.new_job(call, _job_png(call, str(body["prompt"]), width, height, int(body.get("seed") or 0)))
    job.info.update(width=width, height=height, seed=body.get("seed"))
    return _fal_submitted(call, job)


def _fal_submitted(call: Call, job: Job) -> Reply:
    base = f"{call.sim.base_url}/fal/{call.params['model']}/requests/{job.id}"
    return json_reply(
        {
            "request_id": job.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
            "queue_position": 0,
        }
    )


def fal_status(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "fal")
    if job.ready():
        status = {
            "status": "COMPLETED",
            "response_url": f"{call.sim.base_url}/fal/{call.params['model']}/requests/{job.id}",
        }
        if job.outcome == "failed":
            status.update(error="Internal error: simulated failure", error_type="runner_error")
        return json_reply(status)
    queued = time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3
    return json_reply({"status": "IN_QUEUE" if queued else "IN_PROGRESS", "queue_position": 0 if not queued else 1})


def fal_result(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "fal")
    if not job.ready():
        return json_reply({"detail": "Request is still in progress"}, 400)
    if job.outcome == "failed":
        return json_reply({"detail": "Internal error: simulated failure"}, 500)
    if job.info.get("model") == FAL_COMPOSE_MODEL:
        return fal_compose_result(call, job)
    flagged = job.outcome == "policy"
    images = [
        {
            "url": call.sim.media_url(m),
            "width": job.info["width"],
            "height": job.info["height"],
            "content_type": "image/png",
        }
        for m in job.media_ids
    ]
    return json_reply({"images": images, "seed": job.info.get("seed"), "has_nsfw_concepts": [flagged] * len(images)})


# fal ffmpeg-api/compose -------------------------------------------------------------------

FAL_COMPOSE_MODEL = "fal-ai/ffmpeg-api/compose"
COMPOSE_FPS = 30
COMPOSE_MAX_S = 600.0
# Sample rates FFmpeg's AAC encoder takes; any other rate is resampled to 48 kHz.
_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
_AAC_FRAME = 1024
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*);base64,(?P<payload>.*)", re.S)


@dataclass(frozen=True)
class ComposeInput:
    """A compose job's decoded inputs: the still (RGB), the audio (float32 planar) and the timeline."""

    rgb: np.ndarray  # (height, width, 3) uint8
    video_s: float  # the image keyframe's duration
    pcm: np.ndarray | None  # (channels, samples) float32, already trimmed to its keyframe
    sample_rate: int
    png: bytes  # the still as PNG (the thumbnail)


def _compose_data(url: Any, where: str) -> bytes:
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.url is required")
    if not url.startswith("data:"):
        raise BadRequest(
            f"{where}.url: only base64 data: URIs are simulated, got {url[:40]!r}", status=422, code="unsupported_url"
        )
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


def _compose_keyframe(track: dict[str, Any], where: str) -> tuple[dict[str, Any], float, float]:
    keyframes = track.get("keyframes")
    if not isinstance(keyframes, list) or not keyframes:
        raise BadRequest(f"{where}.keyframes must be a non-empty list")
    if len(keyframes) > 1:
        raise BadRequest(f"{where}: only one keyframe per track is simulated", status=422, code="unsupported")
    keyframe = keyframes[0]
    if not isinstance(keyframe, dict):
        raise BadRequest(f"{where}.keyframes[0] must be an object")
    timestamp, duration = keyframe.get("timestamp", 0), keyframe.get("duration")
    for name, value in (("timestamp", timestamp), ("duration", duration)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise BadRequest(f"{where}.keyframes[0].{name} must be a number of milliseconds >= 0, got {value!r}")
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
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise BadRequest(f"{where}.url: no audio stream", code="invalid_audio")
            stream = container.streams.audio[0]
            rate = stream.rate if stream.rate in _AAC_RATES else 48000
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
        resized = Image.fromarray(rgb).resize(tuple(size_override), Image.Resampling.BILINEAR)
        rgb = np.asarray(resized)
    png_buffer = io.BytesIO()
    Image.fromarray(rgb).save(png_buffer, format="PNG", compress_level=1)
    pcm, rate = None, 48000
    if audio is not None:
        keyframe, _, audio_s, where = audio
        pcm, rate = _compose_audio(_compose_data(keyframe.get("url"), f"{where}.keyframes[0]"), audio_s, where)
    return ComposeInput(rgb=rgb, video_s=video_s, pcm=pcm, sample_rate=rate, png=png_buffer.getvalue())


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

            def encode_audio() -> None:  # beside the video: both encoders release the GIL
                try:
                    for start in range(0, spec.pcm.shape[1], _AAC_FRAME):
                        chunk = np.ascontiguousarray(spec.pcm[:, start : start + _AAC_FRAME])
                        audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=audio.layout.name)
                        audio_frame.sample_rate, audio_frame.pts = spec.sample_rate, start
                        audio_frame.time_base = Fraction(1, spec.sample_rate)
                        audio_packets.extend(audio.encode(audio_frame))
                    audio_packets.extend(audio.encode(None))
                except BaseException as exc:  # re-raised below
                    audio_errors.append(exc)

            audio_thread = None
            if audio is not None:
                audio.bit_rate = 32000 * len(spec.pcm)  # a simulator: small and fast
                audio.codec_context.options = {"aac_coder": "fast"}
                audio.codec_context.open()
                audio_thread = threading.Thread(target=encode_audio, name="sim-compose-audio", daemon=True)
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


def fal_compose_submit(call: Call) -> Reply:
    spec = compose_input(call.json(), call.sim.settings.image_size_override)
    job = call.sim.new_job(call, [])
    job.info.update(model=FAL_COMPOSE_MODEL, compose=spec, corrupt=call.corrupt_media(), lock=threading.Lock())
    return _fal_submitted(call, job)


def fal_compose_result(call: Call, job: Job) -> Reply:
    if job.outcome == "policy":
        return json_reply(
            {"detail": [{"msg": "content policy violation: the media was flagged", "type": "content_policy_violation"}]},
            422,
        )
    with job.info["lock"]:  # encoded once, by the first result request after completion
        if "video_id" not in job.info:
            spec: ComposeInput = job.info["compose"]
            mp4 = encode_compose_mp4(spec)
            if job.info["corrupt"]:
                mp4 = broken_mp4(mp4)
            job.info["video_id"] = call.sim.store_media(mp4, "video/mp4", key=True)
            job.info["thumbnail_id"] = call.sim.store_media(spec.png, "image/png", key=True)
            job.info["compose"] = None  # the decoded inputs are not needed any more
    return json_reply(
        {
            "video_url": call.sim.media_url(job.info["video_id"], ".mp4"),
            "thumbnail_url": call.sim.media_url(job.info["thumbnail_id"]),
        }
    )


def gmi_submit(call: Call) -> Reply:
    body = call.json()
    payload = body.get("payload")
    if not body.get("model") or not isinstance(payload, dict) or not payload.get("prompt"):
        raise BadRequest("model and payload.prompt are required")
    width, height = _size(
        payload.get("size") or {k: payload[k] for k in ("width", "height") if k in payload}, (1024, 1024)
    )
    job = call.sim.new_job(call, _job_png(call, str(payload["prompt"]), width, height, int(payload.get("seed") or 0)))
    return json_reply({"request_id": job.id, "status": "queued", "model": body["model"]})


def gmi_get(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "gmi")
    if not job.ready():
        queued = time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3
        return json_reply({"request_id": job.id, "status": "queued" if queued else "processing", "outcome": None})
    if job.outcome != "ok":
        error = (
            "content policy violation: the prompt was flagged"
            if job.outcome == "policy"
            else "simulated worker failure"
        )
        return json_reply({"request_id": job.id, "status": "failed", "outcome": None, "error": error})
    media = [{"id": m, "url": call.sim.media_url(m)} for m in job.media_ids]
    return json_reply({"request_id": job.id, "status": "success", "outcome": {"media_urls": media}})


# ComfyUI -------------------------------------------------------------------------------------


def _node_input(workflow: dict[str, Any], class_types: tuple[str, ...], key: str) -> Any:
    for node_id in sorted(workflow, key=lambda n: (len(n), n)):
        node = workflow[node_id]
        if isinstance(node, dict) and node.get("class_type") in class_types and key in node.get("inputs", {}):
            return node["inputs"][key]
    return None


def comfy_prompt(call: Call) -> Reply:
    body = call.json()
    workflow = body.get("prompt")
    if not isinstance(workflow, dict) or not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
        return json_reply(
            {
                "error": {"type": "invalid_prompt", "message": "Cannot execute because the prompt is invalid"},
                "node_errors": [],
            },
            400,
        )
    outputs = [n for n, node in workflow.items() if node["class_type"] == "SaveImage"]
    if not outputs:
        return json_reply(
            {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs"}, "node_errors": []}, 400
        )
    source_name = _node_input(workflow, ("LoadImage",), "image")
    source = call.sim.uploads.get(str(source_name)) if source_name is not None else None
    if source_name is not None and source is None:
        errors = {
            "errors": [
                {"type": "value_not_in_list", "message": "Value not in list", "details": f"image: {source_name!r}"}
            ]
        }
        return json_reply(
            {
                "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
                "node_errors": {"LoadImage": errors},
            },
            400,
        )
    size_node = ("ImageScale",) if source is not None else ("EmptyLatentImage",)
    width = int(_node_input(workflow, size_node, "width") or 512)
    height = int(_node_input(workflow, size_node, "height") or 512)
    sampler = next((n for n in workflow.values() if n["class_type"] == "KSampler"), {"inputs": {}})
    positive = sampler["inputs"].get("positive")
    text_node = workflow.get(positive[0]) if isinstance(positive, list) and positive else None
    prompt = str(
        (text_node or {}).get("inputs", {}).get("text") or _node_input(workflow, ("CLIPTextEncode",), "text") or ""
    )
    seed = int(sampler["inputs"].get("seed") or 0)
    _check_size(width, height)
    if source is not None:
        png = broken_png(width, height) if call.corrupt_media() else _refined(source, width, height)
        media = [call.sim.store_media(png, "image/png", key=True)]
    else:
        media = _job_png(call, prompt, width, height, seed)
    job = call.sim.new_job(call, media)
    job.info.update(workflow=workflow, outputs=outputs)
    return json_reply({"prompt_id": job.id, "number": len(call.sim.jobs), "node_errors": {}})


def _refined(source: bytes, width: int, height: int) -> bytes:
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


def comfy_history(call: Call) -> Reply:
    job = call.sim.jobs.get(call.params["id"])
    if job is None or job.group != "comfyui" or not job.ready():
        return json_reply({})
    entry: dict[str, Any] = {"prompt": [0, job.id, job.info["workflow"], {}, job.info["outputs"]]}
    if job.outcome == "ok":
        images = [{"filename": f"{m}.png", "subfolder": "", "type": "output"} for m in job.media_ids]
        entry["outputs"] = {job.info["outputs"][0]: {"images": images}}
        entry["status"] = {
            "status_str": "success",
            "completed": True,
            "messages": [["execution_success", {"prompt_id": job.id}]],
        }
    else:
        message = "content policy: simulated refusal" if job.outcome == "policy" else "CUDA out of memory (simulated)"
        error = {"prompt_id": job.id, "node_id": "3", "node_type": "KSampler", "exception_message": message}
        entry["outputs"] = {}
        entry["status"] = {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}
    return json_reply({job.id: entry})


def comfy_view(call: Call) -> Reply:
    filename = (call.query.get("filename") or [""])[0]
    media_id = filename.removesuffix(".png")
    stored = call.sim.media_item(media_id)
    if stored is None:
        return Reply(404, b"file not found", "text/plain")
    return Reply(200, stored[0], stored[1])


def comfy_upload(call: Call) -> Reply:
    content_type = call.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("expected multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + call.body
    )
    fields: dict[str, Any] = {}
    filename = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "image":
            filename = part.get_filename()
            fields["image"] = part.get_payload(decode=True)
        elif name:
            fields[name] = part.get_content().strip()
    if not fields.get("image") or not filename:
        raise BadRequest("multipart field 'image' with a filename is required")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    call.sim.uploads[name] = fields["image"]
    return json_reply({"name": name, "subfolder": fields.get("subfolder", ""), "type": fields.get("type", "input")})


def media_get(call: Call) -> Reply:
    redirect = call.sim.settings.media_redirect_to
    if redirect:
        return Reply(302, b"", "text/plain", {"location": f"{redirect.rstrip('/')}/_sim/media/{call.params['id']}"})
    stored = call.sim.media_item(call.params["id"].split(".", 1)[0])  # m<n>-<hash>.png / .mp4
    if stored is None:
        return Reply(404, b"no such media", "text/plain")
    data, content_type = stored
    if content_type == "image/png" and call.corrupt_media():
        data = broken_png(64, 64)
    return Reply(200, data, content_type)


Handler = Callable[[Call], Reply]

# (method, path pattern, group, endpoint name, handler, is a job submit)
ROUTES: tuple[tuple[str, re.Pattern[str], str, str, Handler, bool], ...] = tuple(
    (method, re.compile(pattern), group, name, handler, submit)
    for method, pattern, group, name, handler, submit in (
        ("POST", r"/v1/chat/completions", "openai_chat", "openai.chat.completions", openai_chat, False),
        ("POST", r"/v1/images/generations", "openai_images", "openai.images.generations", openai_images, False),
        ("POST", r"/v1/audio/speech", "openai_speech", "openai.audio.speech", openai_speech, False),
        ("POST", r"/v1/predictions", "replicate", "replicate.predictions.create", replicate_submit, True),
        ("GET", r"/v1/predictions/(?P<id>[\w-]+)", "replicate", "replicate.predictions.get", replicate_get, False),
        ("GET", r"/fal/(?P<model>.+)/requests/(?P<id>[\w-]+)/status", "fal", "fal.status", fal_status, False),
        ("GET", r"/fal/(?P<model>.+)/requests/(?P<id>[\w-]+)", "fal", "fal.result", fal_result, False),
        ("POST", r"/fal/(?P<model>.+)", "fal", "fal.submit", fal_submit, True),
        ("POST", r"(?:/[\w.-]+)*/requestqueue(?:/apikey)?/requests", "gmi", "gmi.requests.create", gmi_submit, True),
        (
            "GET",
            r"(?:/[\w.-]+)*/requestqueue(?:/apikey)?/requests/(?P<id>[\w-]+)",
            "gmi",
            "gmi.requests.get",
            gmi_get,
            False,
        ),
        ("POST", r"/prompt", "comfyui", "comfyui.prompt", comfy_prompt, True),
        ("GET", r"/history/(?P<id>[\w-]+)", "comfyui", "comfyui.history", comfy_history, False),
        ("GET", r"/view", "comfyui", "comfyui.view", comfy_view, False),
        ("POST", r"/upload/image", "comfyui", "comfyui.upload", comfy_upload, False),
        (
            "POST",
            r"/v1/text-to-speech/(?P<voice>[\w-]+)/with-timestamps",
            "elevenlabs",
            "elevenlabs.tts.with_timestamps",
            elevenlabs_speech,
            False,
        ),
        ("GET", r"/_sim/media/(?P<id>[\w.-]+)", "media", "media.get", media_get, False),
    )
)

_QUEUE_GROUPS = frozenset({"replicate", "fal", "gmi", "comfyui"})

_CONTENT_POLICY_REPLIES: dict[str, Callable[[], Reply]] = {
    "elevenlabs": lambda: error_reply(
        400, "The text was flagged by our content moderation.", "content_policy_violation", "detail"
    ),
}


def _route(method: str, path: str) -> tuple[str, str, Handler, bool, dict[str, str]] | None:
    for route_method, pattern, group, name, handler, submit in ROUTES:
        if route_method == method:
            match = pattern.fullmatch(path)
            if match:
                return group, name, handler, submit, match.groupdict()
    return None


# --- the server -----------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.calls_by_group: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.starts: dict[str, list[float]] = defaultdict(list)  # when each request was let in (wall clock): rates
        # (start, end) of each answered request and of each job's work (wall clock): how busy a provider was.
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.job_spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.rejected_over_cap: dict[str, int] = defaultdict(int)
        self.faults: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.statuses: dict[str, int] = defaultdict(int)
        self.bytes_sent = 0
        self.bytes_sent_by_group: dict[str, int] = defaultdict(int)
        self.headers_seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.auth_failures = 0
        self.jobs_submitted = 0

    def snapshot(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return {k: plain(v) for k, v in value.items()} if isinstance(value, dict) else value

        return {
            "calls": plain(self.calls),
            "calls_by_group": plain(self.calls_by_group),
            "in_flight": plain(self.in_flight),
            "max_in_flight": plain(self.max_in_flight),
            "starts": {group: list(times) for group, times in self.starts.items()},
            "spans": {group: [list(span) for span in spans] for group, spans in self.spans.items()},
            "job_spans": {group: [list(span) for span in spans] for group, spans in self.job_spans.items()},
            "rejected_over_cap": plain(self.rejected_over_cap),
            "faults": plain(self.faults),
            "statuses": plain(self.statuses),
            "bytes_sent": self.bytes_sent,
            "bytes_sent_by_group": plain(self.bytes_sent_by_group),
            "headers_seen": plain(self.headers_seen),
            "auth_failures": self.auth_failures,
            "jobs_submitted": self.jobs_submitted,
        }


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "campaign-studio-simulator/1"
    timeout = 60  # idle keep-alive connections close after this
    sim: "ProviderSimulator"  # set on the subclass made per simulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest(f"body of {length} bytes is too large", status=413)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except BadRequest as exc:
            self._send(error_reply(exc.status, str(exc), exc.code), group=None)
            return
        if method == "GET" and url.path == "/_sim/stats":
            self._send(json_reply(self.sim.stats()), group=None, count=False)  # stats never count themselves
            return
        route = _route(method, url.path)
        if route is None:
            self._send(error_reply(404, f"no simulated endpoint for {method} {url.path}", "not_found"), group=None)
            return
        group, name, handler, submit, params = route
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.sim.handle(group, name, handler, submit, params, parse_qs(url.query), headers, body)
        self._send(reply, group)

    def _send(self, reply: Reply, group: str | None, count: bool = True) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if count:
            self.sim.count_sent(group, reply.status, len(reply.body))


class ProviderSimulator:
    """The simulator; use as ``with ProviderSimulator(settings) as sim: sim.base_url``."""

    def __init__(self, settings: SimulatorSettings | None = None):
        self.settings = settings or SimulatorSettings()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random(self.settings.seed)
        # One fault stream per endpoint group: the k-th request to a group draws the same
        # fault whatever the other groups' requests interleaved with it (concurrent clients).
        self._fault_rngs: dict[str, random.Random] = {}
        self._sequence_pos: dict[str, int] = defaultdict(int)
        self._stats = _Stats()
        self._media: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._ids = itertools.count(1)
        self.jobs: dict[str, Job] = {}
        self.uploads: dict[str, bytes] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle --

    def start(self) -> "ProviderSimulator":
        if self._server is not None or self.base_url:
            raise RuntimeError("the simulator is already started")
        self._stop.clear()
        if self.settings.down == "refuse":
            # Nothing listens: take a free port and let it go.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self.settings.host, self.settings.port))
                port = probe.getsockname()[1]
            self.base_url = f"http://{self.settings.host}:{port}"
            return self
        if self.settings.speech == "spoken":
            # Load the voice (once per process, a few seconds) before serving, so the first speech
            # answer takes what the configured latency says, not the model's load.
            spoken_speech("Ready.", 16000)
        handler = type("SimulatorHandler", (_RequestHandler,), {"sim": self})
        self._server = ThreadingHTTPServer((self.settings.host, self.settings.port), handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers stalled in latency or a "timeout" fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self.base_url = ""

    def __enter__(self) -> "ProviderSimulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def configure(self, settings: SimulatorSettings) -> None:
        """Swap settings while running (host, port and down keep their started values)."""
        with self._lock:
            self.settings = settings
            self._rng = random.Random(settings.seed)
            self._fault_rngs.clear()
            self._sequence_pos.clear()

    # -- stats --

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters (requests still in flight stay counted as such)."""
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = _Stats()
            self._stats.in_flight = in_flight

    def count_sent(self, group: str | None, status: int, size: int) -> None:
        with self._lock:
            self._stats.statuses[str(status)] += 1
            self._stats.bytes_sent += size
            if group:
                self._stats.bytes_sent_by_group[group] += size

    # -- media and jobs (used by the handlers) --

    def store_media(self, data: bytes, content_type: str, key: bool = False) -> str:
        """Keep media for download; returns its URL (or its id with ``key=True``)."""
        media_id = f"m{next(self._ids)}-{hashlib.sha256(data).hexdigest()[:12]}"
        with self._lock:
            self._media[media_id] = (data, content_type)
            while len(self._media) > MAX_STORED_MEDIA:
                self._media.popitem(last=False)
        return media_id if key else self.media_url(media_id)

    def media_url(self, media_id: str, extension: str = ".png") -> str:
        base = (self.settings.media_base_url or self.base_url).rstrip("/")
        return f"{base}/_sim/media/{media_id}{extension}"

    def media_item(self, media_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._media.get(media_id)

    def new_job(self, call: Call, media_ids: list[str]) -> Job:
        outcome = {"job_failure": "failed", "content_policy": "policy"}.get(call.fault, "ok")
        delay = self._sample(self.settings.for_group(call.group).job_latency)
        now = time.monotonic()
        job = Job(uuid.uuid4().hex, call.group, now, now + delay, outcome, media_ids)
        with self._lock:
            self.jobs[job.id] = job
            self._stats.jobs_submitted += 1
            submitted = time.time()
            self._stats.job_spans[call.group].append((submitted, submitted + delay))
        return job

    def job(self, job_id: str, group: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.group != group:
            raise BadRequest(f"no such request {job_id}", status=404, code="not_found")
        return job

    # -- the request pipeline --

    def _sample(self, latency: Latency) -> float:
        with self._lock:
            if latency.distribution == "uniform":
                ms = self._rng.uniform(latency.low_ms, latency.high_ms)
            elif latency.distribution == "lognormal":
                ms = latency.median_ms * math.exp(latency.sigma * self._rng.gauss(0.0, 1.0))
            else:
                ms = latency.ms
        if latency.max_ms is not None:
            ms = min(ms, latency.max_ms)
        return ms / 1000.0

    def _draw_fault(self, group: str) -> str:
        faults = self.settings.for_group(group).faults
        with self._lock:
            position = self._sequence_pos[group]
            if position < len(faults.sequence):
                self._sequence_pos[group] += 1
                return faults.sequence[position]
            if group not in self._fault_rngs:
                self._fault_rngs[group] = random.Random(f"{self.settings.seed}|{group}")
            roll = self._fault_rngs[group].random()
        for name in FAULT_RATES:
            rate = getattr(faults, name)
            if roll < rate:
                return name
            roll -= rate
        return "ok"

    def _authorized(self, headers: dict[str, str]) -> tuple[bool, str]:
        expected = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        authorization = headers.get("authorization", "")
        presented = headers.get("xi-api-key") or authorization.partition(" ")[2].strip()
        return (expected is None or presented == expected), presented

    def handle(
        self,
        group: str,
        name: str,
        handler: Handler,
        submit: bool,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        settings = self.settings
        with self._lock:
            self._stats.calls[name] += 1
            self._stats.calls_by_group[group] += 1
            for header in WATCHED_HEADERS:
                if header in headers:
                    self._stats.headers_seen[group][header] += 1
        if settings.down == "503":
            return error_reply(503, "the provider is down (simulated)", "service_unavailable")
        authorized, presented = self._authorized(headers)
        if not authorized and group != "media":  # media URLs are public, like a CDN's
            with self._lock:
                self._stats.auth_failures += 1
            # Like some real providers, the message echoes what was presented:
            # clients must keep it out of their own errors.
            shown = presented or "(none)"
            return error_reply(401, f"Incorrect API key provided: {shown}", "invalid_api_key")
        with self._lock:
            cap = settings.max_concurrency
            if cap is not None and self._stats.in_flight[group] >= cap:
                self._stats.rejected_over_cap[group] += 1
                over = True
            else:
                over = False
                self._stats.in_flight[group] += 1
                self._stats.max_in_flight[group] = max(self._stats.max_in_flight[group], self._stats.in_flight[group])
                let_in = time.time()
                self._stats.starts[group].append(let_in)
        if over:
            reply = error_reply(429, f"more than {cap} concurrent requests", "rate_limit_exceeded")
            reply.headers["retry-after"] = f"{settings.concurrency_retry_after_s:g}"
            return reply
        try:
            return self._answer(group, handler, submit, params, query, headers, body)
        finally:
            with self._lock:
                self._stats.in_flight[group] -= 1
                self._stats.spans[group].append((let_in, time.time()))

    def _answer(
        self,
        group: str,
        handler: Handler,
        submit: bool,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        endpoint = self.settings.for_group(group)
        if self._stop.wait(self._sample(endpoint.latency)):
            return error_reply(503, "the simulator is stopping", "stopping")
        fault = self._draw_fault(group)
        # Job-level faults only mean something on a submit; elsewhere they answer normally.
        if fault == "job_failure" and not submit:
            fault = "ok"
        if fault == "content_policy" and not submit and group in _QUEUE_GROUPS:
            fault = "ok"
        with self._lock:
            self._stats.faults[group][fault] += 1
        faults = endpoint.faults
        if fault == "server_error":
            return error_reply(faults.server_error_status, "simulated server error", "server_error")
        if fault == "rate_limit":
            reply = error_reply(429, "Rate limit reached (simulated)", "rate_limit_exceeded")
            reply.headers.update(_retry_after_headers(faults.retry_after_s, faults.retry_after_format))
            return reply
        if fault == "timeout" and self._stop.wait(faults.timeout_s):
            return error_reply(503, "the simulator is stopping", "stopping")
        if fault == "content_policy" and group not in _QUEUE_GROUPS:
            make = _CONTENT_POLICY_REPLIES.get(group)
            if make:
                return make()
            return error_reply(
                400, "Your request was rejected as a result of our safety system.", "content_policy_violation"
            )
        call = Call(self, group, params, query, headers, body, fault)
        try:
            reply = handler(call)
        except BadRequest as exc:
            shape = "detail" if group in ("elevenlabs", "fal") else "openai"
            return error_reply(exc.status, str(exc), exc.code, shape)
        if fault == "malformed" and not call.corrupted:
            reply.body = reply.body[: max(1, len(reply.body) // 2)]  # e.g. truncated JSON
        return reply


def _retry_after_headers(seconds: float, fmt: str) -> dict[str, str]:
    if fmt == "ms":
        return {"retry-after-ms": f"{seconds * 1000:g}"}
    if fmt == "http-date":
        return {"retry-after": formatdate(time.time() + seconds, usegmt=True)}
    return {"retry-after": f"{seconds:g}"}
