"""A provider simulator: a real HTTP server on loopback that speaks every API
shape the HTTP adapters use, with real media, injected latency and faults.

```python
from model_adapters.simulator import ProviderSimulator, SimulatorSettings

with ProviderSimulator(SimulatorSettings(api_key="sk-test")) as sim:
    ...  # point adapters at sim.base_url (OpenAI shapes at sim.base_url + "/v1")
    sim.stats()
```

Endpoint groups (each has its own latency, faults, in-flight count):

| group           | endpoints                                                          |
| --------------- | ------------------------------------------------------------------ |
| openai_chat     | POST /v1/chat/completions                                          |
| openai_images   | POST /v1/images/generations                                        |
| openai_speech   | POST /v1/audio/speech                                              |
| replicate       | POST /v1/predictions, GET /v1/predictions/{id}                     |
| fal             | POST /fal/{model}, GET /fal/{model}/requests/{id}[/status]         |
|                 | (model fal-ai/ffmpeg-api/compose: still + audio -> MP4, see below) |
| gmi             | POST [/...]/requestqueue[/apikey]/requests, GET .../requests/{id}  |
| comfyui         | POST /prompt, GET /history/{id}, GET /view, POST /upload/image     |
| elevenlabs      | POST /v1/text-to-speech/{voice_id}/with-timestamps                 |
| media           | GET /_sim/media/{id} (image, MP4 URLs handed out by the others)    |

fal's ``fal-ai/ffmpeg-api/compose`` takes ``{"tracks": [{"id", "type": "video",
"keyframes": [{"url", "timestamp": 0, "duration": ms}]}, {"type": "audio", ...}]}``
with base64 ``data:`` URIs (an image for the video track, any audio FFmpeg
reads for the audio track; one keyframe per track), answers 400 naming the
field when tracks, keyframes or data URIs are missing or bad (422 for what is
not simulated), and its result is ``{"video_url", "thumbnail_url"}``: an MP4
(libx264 ultrafast, yuv420p, the still's size, 30 fps, the image keyframe's
duration; the audio as AAC, cut to its keyframe; moov first) and the still as
PNG. ``image_size_override`` rescales the still first (a wrong-size video). A
``malformed`` fault on the submit (kinds auto or broken_mp4) serves the MP4 cut
in half: it opens, but its frames do not all decode.

``GET /_sim/stats`` returns `ProviderSimulator.stats()` (never faulted, never
authenticated). Settings load from YAML or JSON (`SimulatorSettings.from_file`);
an entry under ``endpoints`` is merged over ``default`` for that group.

This module holds the settings only. The HTTP server, faults and bookkeeping are in
`server.py`; each provider format is a module beside it (`openai_compat`, `elevenlabs`,
`replicate`, `fal` and `fal_compose`, `gmi`, `comfyui`), mapped to paths in `routes.py`,
with the request plumbing in `calls.py` and the synthesised media in `media.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

if TYPE_CHECKING:
    from model_adapters.simulator.server import ProviderSimulator

EndpointGroup = Literal["openai_chat", "openai_images", "openai_speech", "replicate", "fal", "gmi", "comfyui", "elevenlabs", "media"]
ENDPOINT_GROUPS: tuple[str, ...] = EndpointGroup.__args__  # type: ignore[attr-defined]

# What a request can be made to do. "ok" is a normal answer.
Fault = Literal["ok", "server_error", "rate_limit", "timeout", "malformed", "content_policy", "job_failure"]
FAULT_RATES: tuple[str, ...] = ("server_error", "rate_limit", "timeout", "malformed", "content_policy", "job_failure")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Strict):
    """Added before a request is answered (or, as ``job_latency``, before a queued job completes)."""

    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    ms: float = Field(default=0.0, ge=0)  # fixed
    low_ms: float = Field(default=0.0, ge=0)  # uniform
    high_ms: float = Field(default=0.0, ge=0)
    median_ms: float = Field(default=0.0, ge=0)  # lognormal: median * exp(sigma * N(0, 1))
    sigma: float = Field(default=0.5, ge=0)
    max_ms: float | None = Field(default=None, ge=0)  # cap on any draw

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.distribution == "uniform" and self.high_ms < self.low_ms:
            raise ValueError(f"uniform latency: high_ms ({self.high_ms}) < low_ms ({self.low_ms})")
        return self


class Faults(_Strict):
    """Per-request fault rates (probabilities, summing to at most 1), drawn from
    the simulator's seeded RNG. ``sequence`` forces the outcomes of the group's
    first requests, in order, before the rates apply."""

    server_error: float = Field(default=0.0, ge=0, le=1)
    server_error_status: int = Field(default=503, ge=400, le=599)  # any error status, to test mappings
    rate_limit: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = Field(default=1.0, ge=0)
    retry_after_format: Literal["seconds", "http-date", "ms"] = "seconds"
    timeout: float = Field(default=0.0, ge=0, le=1)
    timeout_s: float = Field(default=30.0, ge=0)  # a "timeout" stalls this long, then answers normally
    malformed: float = Field(default=0.0, ge=0, le=1)
    # auto: truncated JSON for JSON bodies, a PNG that does not decode for
    # images (b64 too), a WAV with a wrong header for WAV, an MP4 cut in half
    # for fal compose (broken_mp4).
    malformed_kind: Literal["auto", "truncated_json", "broken_png", "bad_wav", "broken_mp4"] = "auto"
    content_policy: float = Field(default=0.0, ge=0, le=1)
    job_failure: float = Field(default=0.0, ge=0, le=1)  # queued jobs (replicate, fal, gmi, comfyui) that fail
    sequence: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sum(self) -> Faults:
        total = sum(getattr(self, name) for name in FAULT_RATES)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {total:g}, more than 1")
        return self


class EndpointSettings(_Strict):
    latency: Latency = Latency()
    job_latency: Latency = Latency()  # queue groups: submit -> completion
    faults: Faults = Faults()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SimulatorSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0: an ephemeral port
    seed: int = 0
    # The key every request must present (Authorization: Bearer/Key, or
    # xi-api-key); None accepts anything. Media downloads (group "media") are
    # public, like a CDN's. Never reported in stats.
    api_key: SecretStr | None = None
    # A provider fully down: "refuse" (nothing listens: connection refused) or
    # "503" (every request answers 503).
    down: Literal["no", "refuse", "503"] = "no"
    # Requests in flight per endpoint group above which the simulator answers 429.
    max_concurrency: int | None = Field(default=None, ge=1)
    concurrency_retry_after_s: float = Field(default=1.0, ge=0)
    default: EndpointSettings = EndpointSettings()
    endpoints: dict[EndpointGroup, EndpointSettings] = Field(default_factory=dict)
    # Base of the media URLs handed out (default: the simulator's own URL), e.g.
    # "http://169.254.169.254" to test an adapter's allow-list.
    media_base_url: str | None = None
    # Media downloads answer 302 to this base URL + the same path.
    media_redirect_to: str | None = None
    # Generate images at this (width, height) whatever was asked.
    image_size_override: tuple[int, int] | None = None
    replicate_output: Literal["list", "string"] = "list"
    seconds_per_letter: float = Field(default=0.06, gt=0, le=1)
    # Speech endpoints answer with `spoken` English (the Piper voice, so a speech recognizer can judge
    # it like a real voice) or `tones`: harmonic bursts whose word spans are known exactly
    # (`seconds_per_letter` paces them), for tests of alignment arithmetic.
    speech: Literal["spoken", "tones"] = "spoken"
    # Share of chat concepts (chosen by seed) answered well-formed but off-brief: placeholder copy.
    off_brief_share: float = Field(default=0.0, ge=0, le=1)
    speech_sample_rate: int = Field(default=24000, ge=8000, le=48000)  # OpenAI speech WAV

    @model_validator(mode="before")
    @classmethod
    def _merge_endpoint_overrides(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("endpoints"):
            return data
        default = data.get("default") or {}
        if isinstance(default, BaseModel):
            default = default.model_dump()
        merged = {}
        for group, override in data["endpoints"].items():
            if isinstance(override, BaseModel):
                override = override.model_dump(exclude_unset=True)
            merged[group] = _deep_merge(default, override) if isinstance(override, dict) else override
        return {**data, "endpoints": merged}

    def for_group(self, group: str) -> EndpointSettings:
        # A str key: the dict's keys are the EndpointGroup literals, and any other name finds the default.
        endpoint: EndpointSettings = self.endpoints.get(group, self.default)  # type: ignore[call-overload]
        return endpoint

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SimulatorSettings:
        return cls.model_validate(data)

    @classmethod
    def from_file(cls, path: str | Path) -> SimulatorSettings:
        """YAML or JSON (JSON is YAML)."""
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: simulator settings must be a mapping")
        return cls.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)


def __getattr__(name: str) -> Any:
    # The server module is imported on first use, so loading settings stays light.
    if name == "ProviderSimulator":
        from model_adapters.simulator.server import ProviderSimulator

        return ProviderSimulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENDPOINT_GROUPS",
    "EndpointSettings",
    "Fault",
    "Faults",
    "Latency",
    "ProviderSimulator",
    "SimulatorSettings",
]
