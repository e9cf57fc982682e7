"""Adapter kinds a routing config may name, and how to build each one.

Adapter modules are imported only when an adapter is built, so loading
definitions (and validating a routing config) never imports torch, PyAV or
espeak.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from model_adapters.local_concept import PHRASE_BANK_LANGUAGES  # plain Python: phrase banks, no model
from model_adapters.locales import ESPEAK_LOCALE_VOICES
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import Task

# A voice whose speaking rate nobody measured: a typical conversational ad read.
DEFAULT_WORDS_PER_SECOND = 2.5
# Piper "joe" (en_US-joe-medium) at speed 1.0 on ad copy: 3.0 words a second of speech
# (model_adapters/local_piper.py says how it was measured; a test keeps the two equal).
PIPER_WORDS_PER_SECOND = 3.0
# Kokoro-82M's Japanese voice (jf_alpha) at speed 1.0 on the Japanese phrase bank: 5.7 characters
# a second. Japanese has no spaces, so a Japanese script's "words" are its letters and digits
# (model_adapters/local_concept.py `script_length`); model_adapters/local_kokoro.py says how it
# was measured, and a test keeps the two equal.
KOKORO_CHARACTERS_PER_SECOND = 5.7


@dataclass(frozen=True)
class AdapterKind:
    name: str
    task: Task
    target: str  # "module:Class"
    # Bump when the adapter's output for an equal request changes: it feeds the
    # code version of the assets that use it.
    version: str
    local: bool = True
    # The locales it serves (model_adapters/locales.py: a full tag, or a bare language for all of
    # its regions); None: any locale (no language involved, or a hosted model that did not say:
    # a routing config declares those with the provider's `locales:`). The router skips a provider
    # for a variant it does not serve, and a brief is valid only when each routed task has one.
    locales: frozenset[str] | None = None
    # Voice kinds: the measured natural speaking rate, which sizes the concept's script.
    words_per_second: float | None = None

    def build(self, **kwargs: Any) -> Any:
        module_name, class_name = self.target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**kwargs)


ADAPTER_KINDS: dict[str, AdapterKind] = {
    kind.name: kind
    for kind in (
        AdapterKind("local-concept", "concept", "model_adapters.local_concept:LocalConceptWriter", "1", locales=PHRASE_BANK_LANGUAGES),
        AdapterKind("local-smollm2", "concept", "model_adapters.local_llm_concept:SmolLMConceptWriter", "1", locales=frozenset({"en"})),
        AdapterKind("local-procedural-image", "image", "model_adapters.local_image:ProceduralImageGenerator", "1"),
        AdapterKind("local-diffusers", "image", "model_adapters.local_diffusers:DiffusersImageGenerator", "1"),
        AdapterKind("local-torch-refiner", "refine", "model_adapters.local_refine:TorchRefiner", "1"),
        AdapterKind("local-diffusers-refine", "refine", "model_adapters.local_diffusers:DiffusersRefiner", "1"),
        # espeak-ng at 165 wpm: 2.6 words a second of speech on ad copy, pauses included.
        AdapterKind(
            "local-espeak",
            "voice",
            "model_adapters.local_voice:EspeakVoiceAdapter",
            "1",
            locales=frozenset(ESPEAK_LOCALE_VOICES),
            words_per_second=2.6,
        ),
        # One en-US neural voice (Piper "joe") reads en-US and en-GB (an American accent for both).
        AdapterKind(
            "local-piper",
            "voice",
            "model_adapters.local_piper:PiperVoiceAdapter",
            "1",
            locales=frozenset({"en-US", "en-GB"}),
            words_per_second=PIPER_WORDS_PER_SECOND,
        ),
        # Kokoro-82M (int8 ONNX) with its Japanese voices: ja-* (rate in characters, see above).
        AdapterKind(
            "local-kokoro",
            "voice",
            "model_adapters.local_kokoro:KokoroVoiceAdapter",
            "1",
            locales=frozenset({"ja"}),
            words_per_second=KOKORO_CHARACTERS_PER_SECOND,
        ),
        AdapterKind("local-pyav", "video", "model_adapters.local_video:PyAVCompositor", "1"),
        AdapterKind("local-music-bed", "music", "model_adapters.local_music:LocalMusicBed", "1"),
        # HTTP providers (model_adapters.http): built with model, base_url,
        # api_key_env, timeout_s, allowed_hosts and options.
        AdapterKind("openai-chat", "concept", "model_adapters.http.openai_compat:OpenAIChatConcept", "1", local=False),
        AdapterKind("openai-images", "image", "model_adapters.http.openai_compat:OpenAIImages", "1", local=False),
        AdapterKind("openai-speech", "voice", "model_adapters.http.openai_compat:OpenAISpeech", "1", local=False),
        AdapterKind("replicate-images", "image", "model_adapters.http.queue:ReplicateImages", "1", local=False),
        AdapterKind("fal-images", "image", "model_adapters.http.queue:FalImages", "1", local=False),
        AdapterKind("gmi-images", "image", "model_adapters.http.queue:GmiImages", "1", local=False),
        AdapterKind("comfyui-images", "image", "model_adapters.http.comfyui:ComfyUIImages", "1", local=False),
        AdapterKind("comfyui-refine", "refine", "model_adapters.http.comfyui:ComfyUIRefine", "1", local=False),
        AdapterKind("elevenlabs-speech", "voice", "model_adapters.http.elevenlabs:ElevenLabsSpeech", "1", local=False),
        AdapterKind("fal-video-compose", "video", "model_adapters.http.video:FalVideoCompose", "1", local=False),
    )
}


def validate_adapter_kinds() -> None:
    """Every adapter kind does a task that has a spec (model_adapters/tasks.py)."""
    for name, kind in ADAPTER_KINDS.items():
        if kind.name != name:
            raise ValueError(f"adapter kind {name!r} is registered under another name ({kind.name!r})")
        if kind.task not in TASK_SPECS:
            raise ValueError(
                f"adapter kind {name!r} does task {kind.task!r}, which has no task spec; known: {', '.join(sorted(TASK_SPECS))}"
            )
        if (kind.words_per_second is not None) != (kind.task == "voice" and kind.local):
            raise ValueError(f"adapter kind {name!r}: a measured words_per_second is for local voice adapters only, and they need one")


def adapter_kind(name: str) -> AdapterKind:
    try:
        return ADAPTER_KINDS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTER_KINDS))
        raise ValueError(f"unknown adapter {name!r}; known adapters: {known}") from None
