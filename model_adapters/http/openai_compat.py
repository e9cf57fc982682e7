"""OpenAI-compatible APIs: chat completions (concept), images, audio/speech (voice).

The same shapes are served by OpenAI, vLLM, Ollama, GMI Cloud's serving API,
LiteLLM and others, so nothing here assumes api.openai.com beyond the default
base_url. The key travels as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_adapters.http.base import HttpAdapter
from model_adapters.http.decoding import MediaError, decode_wav, finish_voice
from model_adapters.local_concept import caption_lines
from model_adapters.types import (
    ConceptRequest,
    ConceptResult,
    ContentPolicyError,
    ImageRequest,
    ImageResult,
    VoiceRequest,
    VoiceResult,
    WordTiming,
)

PROVIDER = "openai-compatible"
OPENAI_BASE_URL = "https://api.openai.com/v1"

# --- concept prompts ---------------------------------------------------------------

CONCEPT_SYSTEM_PROMPT = """\
You are a senior copywriter for short vertical and horizontal video ads.
From the brief you are given, write one ad concept and answer with a single JSON
object with exactly these keys:
- "headline": at most 8 words, in the brief's locale;
- "script": the voiceover, in the brief's locale, about target_words words, plain
  sentences, no stage directions, no emoji;
- "image_prompt": in English, a description of one still image for the ad: scene,
  light, composition, mood, the brand palette; never any text, letters or logos;
- "caption_lines": the script split into caption lines of at most 42 characters,
  in order, together containing every word of the script.
Never use any of the banned_terms, in any form."""

CONCEPT_JSON_SCHEMA: dict[str, Any] = {
    "name": "campaign_concept",
    "strict": True,
    "schema": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "headline": {"type": "string"},
            "script": {"type": "string"},
            "image_prompt": {"type": "string"},
            "caption_lines": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["headline", "script", "image_prompt", "caption_lines"],
    },
}


def concept_brief(request: ConceptRequest, words_per_second: float) -> dict[str, Any]:
    """The user message: the request as JSON, plus the script's word budget."""
    target_words = max(6, round(request.duration_s * words_per_second))
    return {
        "product": request.product,
        "audience": request.audience,
        "tone": request.tone,
        "palette": list(request.palette),
        "banned_terms": list(request.banned_terms),
        "locale": request.locale,
        "aspect_ratio": request.aspect_ratio,
        "duration_s": request.duration_s,
        "target_words": target_words,
    }


# --- response shapes -----------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Message(_Lenient):
    content: str | None = None
    refusal: str | None = None


class _Choice(_Lenient):
    message: _Message
    finish_reason: str | None = None


class _Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatResponse(_Lenient):
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class _ConceptPayload(_Lenient):
    headline: str = Field(min_length=1)
    script: str = Field(min_length=1)
    image_prompt: str = Field(min_length=1)
    caption_lines: list[str] = Field(default_factory=list)


class _ImageItem(_Lenient):
    b64_json: str | None = None
    url: str | None = None


class _ImagesResponse(_Lenient):
    data: list[_ImageItem] = Field(min_length=1)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _banned_term_in(texts: list[str], banned: tuple[str, ...]) -> str | None:
    joined = "\n".join(texts).lower()
    for term in banned:
        if re.search(rf"(?<!\w){re.escape(term.lower())}(?!\w)", joined):
            return term
    return None


# --- concept ---------------------------------------------------------------------------


class OpenAIChatConcept(HttpAdapter):
    """Concept writer on ``POST {base}/chat/completions``.

    Options: ``response_format`` ("json_schema", the default, or
    "json_object" for servers without structured outputs), ``temperature``,
    ``max_tokens``, ``words_per_second`` (script budget; default: the request's,
    the rate of the voice that will read it), ``send_seed`` (default true),
    ``extra_body`` (a JSON object merged into the request body).
    """

    provider = PROVIDER
    task = "concept"
    default_base_url = OPENAI_BASE_URL
    capabilities = frozenset({"locale:any", "json:validated"})
    adapter_options = frozenset({"response_format", "temperature", "max_tokens", "words_per_second", "send_seed", "extra_body"})

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.response_format = self.options.text("response_format", "json_schema")
        if self.response_format not in ("json_schema", "json_object"):
            raise ValueError(f"{self.adapter_id}: option response_format must be json_schema or json_object, got {self.response_format!r}")
        # None: size each script for the voice the request names the rate of.
        self.words_per_second = self.options.number("words_per_second", 0.0) or None
        self.extra_body = self.options.json_object("extra_body")

    def request_body(self, request: ConceptRequest) -> dict[str, Any]:
        brief = concept_brief(request, self.words_per_second or request.words_per_second)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": CONCEPT_SYSTEM_PROMPT},
                {"role": "user", "content": "Brief (JSON):\n" + json.dumps(brief, ensure_ascii=False)},
            ],
        }
        if self.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": CONCEPT_JSON_SCHEMA}
        else:
            body["response_format"] = {"type": "json_object"}
        if self.options.flag("send_seed", True):
            body["seed"] = request.seed
        if self.options.has("temperature"):
            body["temperature"] = self.options.number("temperature", 1.0)
        if self.options.has("max_tokens"):
            body["max_tokens"] = self.options.integer("max_tokens", 1024)
        body.update(self.extra_body)
        return body

    async def write(self, request: ConceptRequest) -> ConceptResult:
        async with self._deadline("POST /chat/completions"):
            reply = await self._request("POST", self._url("chat/completions"), json_body=self.request_body(request))
        chat = self._parse(_ChatResponse, self._json(reply), reply.endpoint)
        choice = chat.choices[0]
        if choice.message.refusal or choice.finish_reason == "content_filter":
            reason = choice.message.refusal or "finish_reason content_filter"
            raise self._error(ContentPolicyError, f"{reply.endpoint}: the model refused: {reason[:200]}")
        if choice.finish_reason == "length":
            raise self._malformed(reply.endpoint, "the answer was cut off (finish_reason length)")
        content = choice.message.content or ""
        fenced = _FENCE.match(content)
        try:
            data = json.loads(fenced.group(1) if fenced else content)
        except json.JSONDecodeError as exc:
            raise self._malformed(reply.endpoint, f"message content is not JSON ({exc.msg})") from None
        payload = self._parse(_ConceptPayload, data, reply.endpoint)
        script = payload.script.strip()
        lines = tuple(line.strip() for line in payload.caption_lines if line.strip()) or caption_lines(script)
        texts = [payload.headline, script, *lines]
        banned = _banned_term_in(texts, request.banned_terms)
        if banned:
            raise self._malformed(reply.endpoint, f"the concept uses the banned term {banned!r}")
        usage = chat.usage or _Usage()
        return ConceptResult(
            headline=payload.headline.strip(),
            script=script,
            image_prompt=payload.image_prompt.strip(),
            caption_lines=lines,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
        )


# --- images ---------------------------------------------------------------------------


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", part)
        if not match:
            raise ValueError(f"size {part.strip()!r} is not of the form WxH")
        sizes.append((int(match.group(1)), int(match.group(2))))
    return sizes


def closest_size(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The allowed size nearest in aspect ratio; among equals, one that covers the
    request, then the smallest."""
    wanted = np.log(width / height)

    def rank(size: tuple[int, int]) -> tuple[float, bool, int]:
        w, h = size
        return (round(abs(np.log(w / h) - wanted), 6), not (w >= width and h >= height), w * h)

    return min(sizes, key=rank)


class OpenAIImages(HttpAdapter):
    """Images on ``POST {base}/images/generations``.

    Sends ``size`` "WxH"; with the ``sizes`` option (e.g.
    "1024x1024,1536x1024,1024x1536") it asks for the allowed size closest in
    aspect ratio instead. Accepts ``b64_json`` or ``url`` items (a URL is
    fetched with `fetch_media`, allow-list applied). Whatever size comes back,
    the result is exactly the requested width x height: an image of another
    size is scaled to cover it (Lanczos) and centre-cropped, then re-encoded
    as PNG.

    Options: ``sizes``, ``response_format`` ("b64_json" default, "url", or
    "none" to omit the field for models that reject it), ``quality``,
    ``style``, ``palette_in_prompt`` (default true), ``send_seed`` (default
    false: OpenAI rejects it), ``extra_body``.
    """

    provider = PROVIDER
    task = "image"
    default_base_url = OPENAI_BASE_URL
    capabilities = frozenset({"size:any", "fit:cover-crop"})
    adapter_options = frozenset({"sizes", "response_format", "quality", "style", "palette_in_prompt", "send_seed", "extra_body"})

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        sizes = self.options.text("sizes")
        try:
            self.sizes = parse_sizes(sizes) if sizes else []
        except ValueError as exc:
            raise ValueError(f"{self.adapter_id}: option sizes: {exc}") from None
        self.response_format = self.options.text("response_format", "b64_json")
        self.extra_body = self.options.json_object("extra_body")

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        size = (request.width, request.height)
        width, height = closest_size(*size, self.sizes) if self.sizes else size
        prompt = request.prompt
        if request.palette and self.options.flag("palette_in_prompt", True):
            prompt = f"{prompt}. Colour palette: {', '.join(request.palette)}."
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "size": f"{width}x{height}", "n": 1}
        if self.response_format and self.response_format != "none":
            body["response_format"] = self.response_format
        for key in ("quality", "style"):
            if self.options.has(key):
                body[key] = self.options.text(key)
        if self.options.flag("send_seed", False):
            body["seed"] = request.seed
        body.update(self.extra_body)
        return body

    async def generate(self, request: ImageRequest) -> ImageResult:
        async with self._deadline("POST /images/generations"):
            reply = await self._request("POST", self._url("images/generations"), json_body=self.request_body(request))
            item = self._parse(_ImagesResponse, self._json(reply), reply.endpoint).data[0]
            if item.b64_json:
                data = self._b64(item.b64_json, reply.endpoint, "data[0].b64_json")
            elif item.url:
                data = await self.load_media(item.url)
            else:
                raise self._malformed(reply.endpoint, "data[0] has neither b64_json nor url")
        return self._fit_png(data, request.width, request.height, reply.endpoint)


# --- speech ---------------------------------------------------------------------------

_FRAME_S = 0.01
_VOICED_BELOW_PEAK_DB = 35.0
_MIN_PAUSE_S = 0.08


def voiced_segments(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """(start_s, end_s) of the voiced stretches: 10 ms frames within 35 dB of the
    loudest, joined across gaps shorter than 80 ms."""
    frame = max(1, int(sample_rate * _FRAME_S))
    count = len(samples) // frame
    if count == 0:
        return []
    rms = np.sqrt(np.mean(np.square(samples[: count * frame].reshape(count, frame)), axis=1))
    peak = float(rms.max())
    if peak <= 0:
        return []
    voiced = (rms > peak * 10 ** (-_VOICED_BELOW_PEAK_DB / 20)).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced, [0]])))
    runs: list[tuple[int, int]] = []
    for start, end in zip(edges[0::2], edges[1::2], strict=False):
        if runs and (start - runs[-1][1]) * _FRAME_S < _MIN_PAUSE_S:
            runs[-1] = (runs[-1][0], int(end))
        else:
            runs.append((int(start), int(end)))
    return [(s * frame / sample_rate, e * frame / sample_rate) for s, e in runs]


def _snap_to_pauses(bounds: np.ndarray, pauses: list[float], words: list[str], average: float) -> None:
    """Move inner word boundaries (positions in voiced time) onto nearby pauses, in place.

    A boundary after punctuation may move up to 1.5 average words, any other
    half of one; punctuation first, then the closest pairs. Each pause takes
    one boundary, and boundaries keep their order.
    """
    candidates = []
    for i in range(1, len(words)):
        punctuated = words[i - 1][-1] in ",.;:!?"
        tolerance = (1.5 if punctuated else 0.5) * average
        for pause in pauses:
            distance = abs(pause - bounds[i])
            if distance <= tolerance:
                candidates.append((not punctuated, distance, i, pause))
    taken: dict[int, float] = {}
    for _, _, i, pause in sorted(candidates):
        if i in taken or pause in taken.values():
            continue
        if any((k < i and p > pause) or (k > i and p < pause) for k, p in taken.items()):
            continue
        taken[i] = pause
    for i, pause in taken.items():
        bounds[i] = pause
    np.maximum.accumulate(bounds, out=bounds)


def estimate_word_timings(text: str, samples: np.ndarray, sample_rate: int) -> tuple[WordTiming, ...]:
    """Word timings for audio that came without them.

    The voiced time is shared among the whitespace-separated words in
    proportion to their letters and digits; a word boundary that lands near a
    pause moves onto it (`_snap_to_pauses`; after punctuation it may move
    further).
    Boundaries are then mapped from voiced time back to audio time, so pauses
    belong to no word. Starts and ends are monotonic. An estimate: the
    adapter says so in its capabilities ("word_timings:estimated").
    """
    words = re.findall(r"\S+", text)
    if not words:
        return ()
    segments = voiced_segments(samples, sample_rate)
    if not segments:
        return tuple(WordTiming(word=w, start_s=0.0, end_s=0.0) for w in words)
    durations = np.array([end - start for start, end in segments])
    seg_ends = np.cumsum(durations)
    seg_starts = seg_ends - durations
    total = float(seg_ends[-1])
    weights = np.array([max(1, sum(ch.isalnum() for ch in w)) for w in words], dtype=np.float64)
    bounds = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * total

    _snap_to_pauses(bounds, [float(p) for p in seg_ends[:-1]], words, total / len(words))

    def to_time(position: float, is_start: bool) -> float:
        side: Literal["left", "right"] = "right" if is_start else "left"
        j = min(int(np.searchsorted(seg_ends, position, side=side)), len(segments) - 1)
        return segments[j][0] + float(np.clip(position - seg_starts[j], 0.0, durations[j]))

    timings: list[WordTiming] = []
    previous_end = 0.0
    for i, word in enumerate(words):
        start = max(previous_end, to_time(bounds[i], True))
        end = max(start, to_time(bounds[i + 1], False))
        timings.append(WordTiming(word=word, start_s=round(start, 4), end_s=round(end, 4)))
        previous_end = end
    return tuple(timings)


class OpenAISpeech(HttpAdapter):
    """Speech on ``POST {base}/audio/speech`` with ``response_format: "wav"``.

    The WAV is decoded, word timings are estimated (`estimate_word_timings`:
    the API returns none), and the audio is normalised to the request's
    loudness and true-peak ceiling. ``request.voice`` (an espeak voice name in
    briefs) is not sent: the provider voice comes from options.

    Options: ``voice`` (default "alloy"), ``voice:<locale>`` or
    ``voice:<language>`` per locale, ``instructions``, ``speed``,
    ``max_input_chars`` (default 4096; longer text is UnsupportedInput),
    ``extra_body``.
    """

    provider = PROVIDER
    task = "voice"
    default_base_url = OPENAI_BASE_URL
    capabilities = frozenset({"word_timings:estimated", "locale:any", "format:wav"})
    adapter_options = frozenset({"voice", "instructions", "speed", "max_input_chars", "extra_body"})
    option_prefixes = ("voice:",)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_input_chars = self.options.integer("max_input_chars", 4096)
        self.extra_body = self.options.json_object("extra_body")

    def request_body(self, request: VoiceRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "voice": self.options.by_locale("voice", request.locale, "voice") or "alloy",
            "input": request.text,
            "response_format": "wav",
        }
        if self.options.has("instructions"):
            body["instructions"] = self.options.text("instructions")
        # The option is the voice's own pace; the request's speed fits the speech to the brief's duration.
        speed = self.options.number("speed", 1.0) * request.speed
        if self.options.has("speed") or request.speed != 1.0:
            body["speed"] = round(speed, 4)
        body.update(self.extra_body)
        return body

    async def synthesize(self, request: VoiceRequest) -> VoiceResult:
        self._check_voice_text(request.text, self.max_input_chars)
        async with self._deadline("POST /audio/speech"):
            reply = await self._request(
                "POST", self._url("audio/speech"), json_body=self.request_body(request), headers={"accept": "audio/wav"}
            )
        try:
            samples, sample_rate = decode_wav(reply.content)
        except MediaError as exc:
            raise self._malformed(reply.endpoint, str(exc)) from None
        if not np.any(np.abs(samples) > 1e-4):
            raise self._malformed(reply.endpoint, "the audio is silent")
        words = estimate_word_timings(request.text, samples, sample_rate)
        return await asyncio.to_thread(finish_voice, samples, sample_rate, words, request)


__all__ = [
    "OpenAIChatConcept",
    "OpenAIImages",
    "OpenAISpeech",
    "estimate_word_timings",
    "voiced_segments",
]
