"""One record per routed task: everything the rest of the project knows about a task.

A task spec says which coroutine an adapter of the task exposes, its request
and result types, the media types of the bytes a result carries, how a call
is priced from a provider's price table, and what a representative request
looks like for `studio estimate`. The router, the response cache, the
routing config's validation, the estimate and the dry run read these
records; nothing keeps a second list of tasks.

Adding a task is one `TaskSpec` in `TASK_SPECS` (and its request/result types,
in model_adapters/types.py or beside the spec). A task that is incomplete
fails `validate_task_specs()`, which runs when the definitions load.

No Dagster and no torch here: the definitions import this module.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from model_adapters.types import (
    AspectRatio,
    ConceptRequest,
    ConceptResult,
    ImageRequest,
    ImageResult,
    Price,
    RefineRequest,
    StrictModel,
    VideoRequest,
    VideoResult,
    VoiceRequest,
    VoiceResult,
    canonical_json,
)

CHARACTERS_PER_WORD = 6  # spoken scripts average ~5 letters and a space
PRICE_UNITS = frozenset(Price.model_fields)


@dataclass(frozen=True)
class Blob:
    """A bytes field of a result: stored as an artifact with this extension and media type."""

    extension: str
    media_type: str


@dataclass(frozen=True)
class VariantOutline:
    """What `studio estimate` knows of a variant before anything is made: the brief's fields."""

    campaign_id: str
    variant_id: str
    product: str
    audience: str
    tone: str
    palette: tuple[str, ...]
    banned_terms: tuple[str, ...]
    locale: str
    voice: str
    aspect_ratio: AspectRatio
    duration_s: float

    @property
    def script_words(self) -> int:
        """Words of a script that fills the duration (the local writer's speaking rate)."""
        from model_adapters.local_concept import concept_word_budget  # plain Python, no torch

        return concept_word_budget(self.duration_s)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    method: str  # the adapter coroutine: `await adapter.<method>(request, *blobs)`
    request_type: type[BaseModel]
    result_type: type  # a pydantic model, or a dataclass whose bytes fields are in `blobs`
    blobs: Mapping[str, Blob]  # result field -> how its bytes are stored
    price_units: frozenset[str]  # the `Price` fields `cost` reads; a provider billing by another is an error
    # (price, request, result or None) -> USD: before the call an estimate from the request,
    # after it the actual from the result.
    cost: Callable[[Price, Any, Any], float]
    projected_request: Callable[[VariantOutline], BaseModel]  # sized like a real one, for estimates
    description: str = ""

    def estimate_cost(self, price: Price, request: Any, result: Any = None) -> float:
        return self.cost(price, request, result)

    # --- the response cache's encoding of results ---------------------------------------

    def encode_result(self, result: Any, put_blob: Callable[[bytes, Blob], dict[str, Any]]) -> dict[str, Any]:
        """A JSON-ready entry; bytes fields become references from `put_blob`."""
        if isinstance(result, BaseModel):
            return {"kind": "model", "value": result.model_dump(mode="json")}
        if not isinstance(result, self.result_type):
            raise TypeError(f"task {self.name!r} returned {type(result).__name__}, not {self.result_type.__name__}")
        values = _adapter(self.result_type).dump_python(result, mode="json", exclude=set(self.blobs))
        for name, blob in self.blobs.items():
            values[name] = {"$blob": put_blob(getattr(result, name), blob)}
        return {"kind": "dataclass", "value": values}

    def decode_result(self, entry: dict[str, Any], get_blob: Callable[[dict[str, Any]], bytes]) -> Any:
        if entry["kind"] == "model":
            if not issubclass(self.result_type, BaseModel):
                raise TypeError(f"task {self.name!r}: a cached model entry, but {self.result_type.__name__} is no pydantic model")
            return self.result_type.model_validate(entry["value"])
        values = dict(entry["value"])
        for name in self.blobs:
            values[name] = get_blob(values[name]["$blob"])
        return _adapter(self.result_type).validate_python(values)


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


# --- how each task is priced and projected --------------------------------------------------


def _concept_cost(price: Price, request: ConceptRequest, result: ConceptResult | None) -> float:
    if result is not None:
        input_tokens, output_tokens = result.input_tokens, result.output_tokens
    else:
        # ~4 characters a token for the prompt; the script's words plus JSON overhead.
        input_tokens = len(canonical_json(request)) // 4 + 200
        output_tokens = int(request.duration_s * 4) + 150
    return price.per_input_token * input_tokens + price.per_output_token * output_tokens


def _per_image(price: Price, request: Any, result: Any) -> float:
    return price.per_image


def _voice_cost(price: Price, request: VoiceRequest, result: Any) -> float:
    return price.per_1k_characters * len(request.text) / 1000.0


def _video_cost(price: Price, request: VideoRequest, result: VideoResult | None) -> float:
    seconds = result.duration_s if result is not None else request.audio_duration_s + request.tail_s
    return price.per_output_second * seconds


def _concept_projection(v: VariantOutline) -> ConceptRequest:
    return ConceptRequest(
        campaign_id=v.campaign_id,
        variant_id=v.variant_id,
        product=v.product,
        audience=v.audience,
        tone=v.tone,
        palette=v.palette,
        banned_terms=v.banned_terms,
        locale=v.locale,
        aspect_ratio=v.aspect_ratio,
        duration_s=v.duration_s,
        seed=0,
    )


# --- music: a bed under the voice (the worked example of docs/stages.md) ------------------


class MusicRequest(StrictModel):
    duration_s: float = Field(gt=0, le=600)
    mood: str  # the brief's tone
    palette: tuple[str, ...]  # the brand colours: they pick the key
    seed: int
    sample_rate: int = Field(default=22050, ge=8000, le=48000)


@dataclasses.dataclass(frozen=True)
class MusicResult:
    wav: bytes
    sample_rate: int
    duration_s: float


def _music_cost(price: Price, request: MusicRequest, result: MusicResult | None) -> float:
    return price.per_output_second * (result.duration_s if result is not None else request.duration_s)


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="concept",
            method="write",
            request_type=ConceptRequest,
            result_type=ConceptResult,
            blobs={},
            price_units=frozenset({"per_input_token", "per_output_token"}),
            cost=_concept_cost,
            projected_request=_concept_projection,
            description="headline, script, image prompt and caption lines from the brief",
        ),
        TaskSpec(
            name="image",
            method="generate",
            request_type=ImageRequest,
            result_type=ImageResult,
            blobs={"png": Blob(".png", "image/png")},
            price_units=frozenset({"per_image"}),
            cost=_per_image,
            projected_request=lambda v: ImageRequest(prompt="x", width=8, height=8, palette=v.palette, seed=0),
            description="text to image",
        ),
        TaskSpec(
            name="refine",
            method="refine",
            request_type=RefineRequest,
            result_type=ImageResult,
            blobs={"png": Blob(".png", "image/png")},
            price_units=frozenset({"per_image"}),
            cost=_per_image,
            projected_request=lambda v: RefineRequest(
                source_sha256="0" * 64, min_short_side=1080, aspect_ratio=v.aspect_ratio, palette=v.palette, headline="x", seed=0
            ),
            description="image to image: upscale, grade, typeset the headline",
        ),
        TaskSpec(
            name="voice",
            method="synthesize",
            request_type=VoiceRequest,
            result_type=VoiceResult,
            blobs={"wav": Blob(".wav", "audio/wav")},
            price_units=frozenset({"per_1k_characters"}),
            cost=_voice_cost,
            projected_request=lambda v: VoiceRequest(text="x" * (v.script_words * CHARACTERS_PER_WORD), locale=v.locale, voice=v.voice),
            description="speech with word timings",
        ),
        TaskSpec(
            name="video",
            method="compose",
            request_type=VideoRequest,
            result_type=VideoResult,
            blobs={"mp4": Blob(".mp4", "video/mp4")},
            price_units=frozenset({"per_output_second"}),
            cost=_video_cost,
            projected_request=lambda v: VideoRequest(
                image_sha256="0" * 64, audio_sha256="0" * 64, audio_duration_s=v.duration_s, cues=(), width=8, height=8
            ),
            description="still + voice + captions to an MP4",
        ),
        TaskSpec(
            name="music",
            method="compose_music",
            request_type=MusicRequest,
            result_type=MusicResult,
            blobs={"wav": Blob(".wav", "audio/wav")},
            price_units=frozenset({"per_output_second"}),
            cost=_music_cost,
            projected_request=lambda v: MusicRequest(duration_s=v.duration_s, mood=v.tone, palette=v.palette, seed=0),
            description="an instrumental bed of a given length",
        ),
    )
}


class UnknownTask(ValueError):
    pass


def task_spec(name: str) -> TaskSpec:
    try:
        return TASK_SPECS[name]
    except KeyError:
        raise UnknownTask(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_SPECS))}") from None


def validate_task_specs(specs: Mapping[str, TaskSpec] = TASK_SPECS) -> None:
    """Every task spec complete and consistent; raises naming the task and what is wrong."""
    for key, spec in specs.items():
        where = f"task spec {key!r}"
        if spec.name != key:
            raise ValueError(f"{where}: registered under {key!r} but named {spec.name!r}")
        if not spec.method.isidentifier():
            raise ValueError(f"{where}: method {spec.method!r} is not a method name")
        if not (isinstance(spec.request_type, type) and issubclass(spec.request_type, BaseModel)):
            raise ValueError(f"{where}: request_type must be a pydantic model (its canonical JSON is the cache key)")
        is_model = isinstance(spec.result_type, type) and issubclass(spec.result_type, BaseModel)
        if not is_model and not dataclasses.is_dataclass(spec.result_type):
            raise ValueError(f"{where}: result_type must be a pydantic model or a dataclass")
        if not is_model:
            fields = {f.name: f.type for f in dataclasses.fields(spec.result_type)}
            bytes_fields = {name for name, kind in fields.items() if kind in (bytes, "bytes")}
            if bytes_fields != set(spec.blobs):
                raise ValueError(
                    f"{where}: blobs {sorted(spec.blobs)} must name exactly the bytes fields of "
                    f"{spec.result_type.__name__} ({sorted(bytes_fields)}), or the cache cannot store its results"
                )
        elif spec.blobs:
            raise ValueError(f"{where}: a pydantic result carries no bytes fields, so blobs must be empty")
        if not spec.price_units or not spec.price_units <= PRICE_UNITS:
            raise ValueError(f"{where}: price_units {sorted(spec.price_units)} must be some of {sorted(PRICE_UNITS)}")
        for blob_name, blob in spec.blobs.items():
            if not blob.extension.startswith(".") or "/" not in blob.media_type:
                raise ValueError(f"{where}: blob {blob_name!r} needs an extension like '.png' and a media type")
