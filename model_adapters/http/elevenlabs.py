"""ElevenLabs text-to-speech with character timestamps (task voice).

``POST {base}/v1/text-to-speech/{voice_id}/with-timestamps?output_format=pcm_<rate>``
with header ``xi-api-key`` and body ``{text, model_id}`` ->
``{audio_base64, alignment: {characters, character_start_times_seconds,
character_end_times_seconds}}``. The PCM (16-bit mono) is wrapped into a WAV,
normalised to the request's loudness and true-peak ceiling, and the character
alignment becomes one `WordTiming` per whitespace-separated word.

Options: ``voice_id`` (default voice), ``voice_id:<locale>`` /
``voice_id:<language>`` (per locale, checked first), ``sample_rate`` (16000,
22050 default, 24000 or 44100), ``language_code`` (sent as is; "auto" sends
the request locale's language), ``stability``, ``similarity_boost``,
``style``, ``speed`` (voice_settings), ``max_input_chars`` (default 5000),
``extra_body``. ``model`` defaults to eleven_multilingual_v2. The brief's
``request.voice`` (an espeak voice name) is not used.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from model_adapters.http.base import HttpAdapter
from model_adapters.http.decoding import finish_voice, pcm16_to_float
from model_adapters.types import UnsupportedInput, VoiceRequest, VoiceResult, WordTiming

SAMPLE_RATES = (16000, 22050, 24000, 44100)
_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VOICE_SETTINGS = ("stability", "similarity_boost", "style", "speed")


class _Alignment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    characters: list[str]
    character_start_times_seconds: list[float]
    character_end_times_seconds: list[float]


class _TimestampedAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")
    audio_base64: str
    alignment: _Alignment | None = None
    normalized_alignment: _Alignment | None = None


class AlignmentError(ValueError):
    pass


def alignment_word_timings(text: str, alignment: _Alignment, duration_s: float) -> tuple[WordTiming, ...]:
    """One WordTiming per whitespace-separated word of the aligned characters:
    from its first character's start to its last character's end, clipped to
    the audio and made monotonic. The words carry the request's spelling when
    the request has as many words as the alignment (punctuation attached)."""
    chars, starts, ends = (
        alignment.characters,
        alignment.character_start_times_seconds,
        alignment.character_end_times_seconds,
    )
    if not (len(chars) == len(starts) == len(ends)):
        raise AlignmentError(f"alignment arrays differ in length ({len(chars)}, {len(starts)}, {len(ends)})")
    if not all(math.isfinite(t) for t in (*starts, *ends)):
        raise AlignmentError("alignment has non-finite times")
    # One entry per code point, whatever the provider grouped.
    flat: list[tuple[str, float, float]] = [(c, s, e) for group, s, e in zip(chars, starts, ends, strict=False) for c in group]
    aligned = "".join(c for c, _, _ in flat)
    spans = [m.span() for m in re.finditer(r"\S+", aligned)]
    request_words = re.findall(r"\S+", text)
    words = request_words if len(request_words) == len(spans) else [aligned[a:b] for a, b in spans]
    timings: list[WordTiming] = []
    previous_end = 0.0
    for word, (first, last) in zip(words, spans, strict=False):
        start = min(max(flat[first][1], previous_end), duration_s)
        end = min(max(flat[last - 1][2], start), duration_s)
        timings.append(WordTiming(word=word, start_s=round(start, 4), end_s=round(end, 4)))
        previous_end = end
    return tuple(timings)


class ElevenLabsSpeech(HttpAdapter):
    """ElevenLabs voice with aligned word timings; see the module docstring."""

    provider = "elevenlabs"
    task = "voice"
    default_base_url = "https://api.elevenlabs.io"
    default_model = "eleven_multilingual_v2"
    auth_header = "xi-api-key"
    auth_template = "{key}"
    capabilities = frozenset({"word_timings:aligned", "locale:any", "format:pcm"})
    adapter_options = frozenset({"voice_id", "sample_rate", "language_code", "max_input_chars", "extra_body", *_VOICE_SETTINGS})
    option_prefixes = ("voice_id:",)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.sample_rate = self.options.integer("sample_rate", 22050)
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"{self.adapter_id}: option sample_rate must be one of {SAMPLE_RATES}, got {self.sample_rate}")
        self.max_input_chars = self.options.integer("max_input_chars", 5000)
        self.extra_body = self.options.json_object("extra_body")

    def voice_id(self, locale: str) -> str:
        voice = self.options.by_locale("voice_id", locale, "voice_id")
        if not voice:
            raise self._error(
                UnsupportedInput,
                f"no voice_id configured for locale {locale!r} (options voice_id or voice_id:{locale})",
            )
        if not _VOICE_ID.match(voice):
            raise ValueError(f"{self.adapter_id}: voice_id {voice!r} is not a plain identifier")
        return voice

    def request_body(self, request: VoiceRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"text": request.text, "model_id": self.model}
        settings = {k: self.options.number(k, 0.0) for k in _VOICE_SETTINGS if self.options.has(k)}
        if request.speed != 1.0:  # fits the speech to the brief's duration (ElevenLabs allows 0.7-1.2)
            settings["speed"] = round(settings.get("speed", 1.0) * request.speed, 4)
        if settings:
            body["voice_settings"] = settings
        language = self.options.text("language_code")
        if language:
            body["language_code"] = request.locale.split("-")[0].lower() if language == "auto" else language
        body.update(self.extra_body)
        return body

    async def synthesize(self, request: VoiceRequest) -> VoiceResult:
        self._check_voice_text(request.text, self.max_input_chars)
        voice = self.voice_id(request.locale)
        url = self._url(f"v1/text-to-speech/{voice}/with-timestamps")
        async with self._deadline("POST /v1/text-to-speech/with-timestamps"):
            reply = await self._request(
                "POST", url, json_body=self.request_body(request), params={"output_format": f"pcm_{self.sample_rate}"}
            )
        parsed = self._parse(_TimestampedAudio, self._json(reply), reply.endpoint)
        samples = pcm16_to_float(self._b64(parsed.audio_base64, reply.endpoint, "audio_base64"))
        if len(samples) == 0 or not np.any(np.abs(samples) > 1e-4):
            raise self._malformed(reply.endpoint, "the audio is empty or silent")
        alignment = parsed.alignment or parsed.normalized_alignment
        if alignment is None:
            raise self._malformed(reply.endpoint, "no alignment in the response")
        try:
            words = alignment_word_timings(request.text, alignment, len(samples) / self.sample_rate)
        except AlignmentError as exc:
            raise self._malformed(reply.endpoint, str(exc)) from None
        return await asyncio.to_thread(finish_voice, samples, self.sample_rate, words, request)
