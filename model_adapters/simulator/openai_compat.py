"""OpenAI-compatible endpoints: chat completions (a concept as JSON content), image generations
(URL or b64_json) and audio speech (WAV or raw PCM)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

from model_adapters.media.wav import to_pcm16
from model_adapters.simulator.calls import (
    BadRequest,
    Call,
    Reply,
    check_size,
    json_reply,
    parse_size,
    simulated_speech,
    speech_speed,
)
from model_adapters.simulator.concepts import off_brief, synth_concept, synth_off_brief_concept
from model_adapters.simulator.media import bad_wav, encode_wav16


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
    texts: list[str] = [m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
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
    width, height = check_size(*parse_size(body.get("size", "1024x1024"), (1024, 1024)))
    png = call.png(prompt, width, height, int(body.get("seed") or 0))
    if body.get("response_format", "url") == "b64_json":
        item = {"b64_json": base64.b64encode(png).decode(), "revised_prompt": prompt}
    else:
        item = {"url": call.sim.store_media(png, "image/png")}
    return json_reply({"created": int(time.time()), "data": [item]})


def openai_speech(call: Call) -> Reply:
    body = call.json()
    text = body.get("input")
    if not isinstance(text, str) or not text.strip() or not body.get("voice") or not body.get("model"):
        raise BadRequest("model, voice and input are required")
    fmt = body.get("response_format", "mp3")
    if fmt not in ("wav", "pcm"):
        raise BadRequest(f"response_format {fmt!r} is not simulated (wav, pcm)", code="unsupported_response_format")
    speed = speech_speed(body.get("speed", 1.0), 0.25, 4.0)
    speech = simulated_speech(call, text, call.sim.settings.speech_sample_rate, speed)
    if fmt == "pcm":
        return Reply(200, to_pcm16(speech.samples).tobytes(), "audio/pcm")
    wav = encode_wav16(speech.samples, speech.sample_rate)
    return Reply(200, bad_wav(wav) if call.corrupt_media() else wav, "audio/wav")
