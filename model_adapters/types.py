"""Requests, results and adapter descriptions shared by every model family.

Plain pydantic and dataclasses: no Dagster here, so adapters can be used and
tested alone. Requests are pydantic models so they have a canonical JSON form
(the request hash and, later, the cache key are computed from it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

# The ratio names and their sides are one table in model_adapters.media.aspect; re-exported here.
from model_adapters.media.aspect import AspectRatio as AspectRatio
from model_adapters.media.aspect import frame_size as frame_size

# A routed task's name: a key of `model_adapters.tasks.TASK_SPECS` (checked where configs load).
Task = str


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def canonical_json(model: BaseModel) -> str:
    """One byte-stable JSON form of a request: sorted keys, no whitespace."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def request_hash(model: BaseModel) -> str:
    return hashlib.sha256(canonical_json(model).encode()).hexdigest()


class Price(StrictModel):
    """What one call costs; every unit a provider might bill by, zero if unused."""

    per_input_token: float = 0.0
    per_output_token: float = 0.0
    per_image: float = 0.0
    per_1k_characters: float = 0.0
    per_output_second: float = 0.0


class AdapterInfo(StrictModel):
    adapter_id: str
    task: Task
    provider: str
    model: str
    model_version: str
    price: Price = Price()
    capabilities: frozenset[str] = frozenset()
    max_concurrency: int = 1


# --- concept -----------------------------------------------------------------


class ConceptRequest(StrictModel):
    campaign_id: str
    variant_id: str
    product: str
    audience: str
    tone: str
    palette: tuple[str, ...]
    banned_terms: tuple[str, ...] = ()
    locale: str
    aspect_ratio: AspectRatio
    duration_s: float
    seed: int
    # The speaking rate of the voice that will read the script (the voice route's provider for
    # this locale, model_adapters/registry.py): the script is sized to duration_s at this rate.
    words_per_second: float = Field(default=2.6, gt=0.5, le=6.0)


class ConceptResult(StrictModel):
    headline: str
    script: str
    image_prompt: str
    caption_lines: tuple[str, ...]
    input_tokens: int = 0
    output_tokens: int = 0


# --- images ------------------------------------------------------------------


class ImageRequest(StrictModel):
    prompt: str
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    palette: tuple[str, ...]
    seed: int


class RefineRequest(StrictModel):
    """A draft image is referenced by its sha256; the bytes travel beside it."""

    source_sha256: str
    min_short_side: int = Field(gt=0, le=8192)
    aspect_ratio: AspectRatio
    palette: tuple[str, ...]
    headline: str
    seed: int


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    width: int
    height: int


# --- voice -------------------------------------------------------------------


class VoiceRequest(StrictModel):
    text: str
    locale: str
    voice: str
    target_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    # Speaking-rate multiplier (1.0: the voice's natural rate). The voiceover stage asks for a
    # little faster or slower so the speech fits the brief's duration (MIN_SPEED..MAX_SPEED).
    speed: float = Field(default=1.0, ge=0.85, le=1.15)


class WordTiming(StrictModel):
    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class VoiceResult:
    wav: bytes
    sample_rate: int
    duration_s: float
    words: tuple[WordTiming, ...]
    loudness_lufs: float
    true_peak_dbtp: float
    characters: int = 0


# --- video -------------------------------------------------------------------


class CaptionCue(StrictModel):
    start_s: float
    end_s: float
    lines: tuple[str, ...]


class VideoRequest(StrictModel):
    image_sha256: str
    audio_sha256: str
    audio_duration_s: float
    cues: tuple[CaptionCue, ...]
    width: int
    height: int
    fps: int = 30
    tail_s: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class VideoResult:
    mp4: bytes
    width: int
    height: int
    fps: int
    duration_s: float
    video_duration_s: float
    audio_duration_s: float
    extras: dict[str, Any] = field(default_factory=dict)  # figures of the render (frames, codecs, ...), JSON-ready


# --- protocols ---------------------------------------------------------------


@runtime_checkable
class ModelAdapter(Protocol):
    info: AdapterInfo

    async def aclose(self) -> None: ...


class AdapterError(Exception):
    """Raised by an adapter. The router reads the class and fields to decide:
    retry the same provider, cool it down, or fall back to the next one.

    Messages must never contain secrets (API keys, auth headers)."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
        billed_usd: float | None = None,
    ):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s
        # What the provider says this failed call cost (usage fields, a cost header), when it says.
        self.billed_usd = billed_usd
        if retryable is not None:
            self.retryable = retryable


class RetryableError(AdapterError):
    """408, 409, 5xx, timeouts, connection errors, malformed bodies: try again."""

    retryable = True


class RateLimited(RetryableError):
    """429: try again after `retry_after_s`; the provider cools down meanwhile."""


class ProviderTimeout(RetryableError):
    pass


class MalformedResponse(RetryableError):
    """The provider answered, but the body or media does not parse: never stored."""


class AuthError(AdapterError):
    """401/403: not retried; the provider cools down and the route falls back."""


class ContentPolicyError(AdapterError):
    """The provider refused the content: not retried on this provider."""


class UnsupportedInput(AdapterError):
    """This provider cannot do this request (language, size, ...): fall back."""


class FatalProviderError(AdapterError):
    """Any other 4xx: not retried."""
