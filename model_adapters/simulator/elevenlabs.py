"""ElevenLabs text-to-speech with timestamps: base64 PCM at the asked rate and a character
alignment that matches the audio."""

from __future__ import annotations

import base64
import re

from model_adapters.media.wav import to_pcm16
from model_adapters.simulator.calls import BadRequest, Call, Reply, json_reply, simulated_speech, speech_speed


def elevenlabs_speech(call: Call) -> Reply:
    body = call.json()
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text is required", status=422, code="invalid_text")
    output_format = (call.query.get("output_format") or ["mp3_44100_128"])[0]
    match = re.fullmatch(r"pcm_(16000|22050|24000|44100)", output_format)
    if not match:
        raise BadRequest(f"output_format {output_format!r} is not simulated (pcm_*)", status=422, code="unsupported_output_format")
    settings = body.get("voice_settings") or {}
    speed = speech_speed(settings.get("speed", 1.0) if isinstance(settings, dict) else 1.0, 0.7, 1.2)
    speech = simulated_speech(call, text, int(match.group(1)), speed)
    alignment = {
        "characters": speech.characters,
        "character_start_times_seconds": speech.starts,
        "character_end_times_seconds": speech.ends,
    }
    return json_reply(
        {
            "audio_base64": base64.b64encode(to_pcm16(speech.samples).tobytes()).decode(),
            "alignment": alignment,
            "normalized_alignment": alignment,
        }
    )
