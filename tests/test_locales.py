"""Locales: BCP 47 normalization, what providers declare, and briefs checked against the routes."""

from pathlib import Path

import pytest

from model_adapters.locales import normalize_locale, serves_locale
from orchestration.pipelines import PipelineError, load_pipelines, pipeline_for
from resources.brief_schema import parse_brief
from resources.routing_config import RoutingConfigError, load_routing_config, parse_routing_config

ROOT = Path(__file__).resolve().parents[1]
LOCAL = load_routing_config(ROOT / "config/routing.local.yaml")
# The eight locales the embedded default runs end to end (tests/test_locales_e2e.py makes them).
LOCAL_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "it-IT", "nl-NL")


def brief_with(*locales: str, pipeline: str = "campaign") -> str:
    rows = "\n".join(f"  - {{id: v{i}, locale: {loc}, aspect_ratio: '1:1', duration_s: 8}}" for i, loc in enumerate(locales))
    return (
        "campaign_id: locales\nproduct: Lamp\naudience: readers\ntone: calm\npalette: ['#112233']\n"
        f"budget_usd: 1\npipeline: {pipeline}\nvariants:\n{rows}\n"
    )


@pytest.mark.parametrize(
    "tag, canonical",
    [
        ("fr-fr", "fr-FR"),
        ("FR_fr", "fr-FR"),
        ("en-us", "en-US"),
        ("pt-br", "pt-BR"),
        ("es-419", "es-419"),
        ("zh-hans-cn", "zh-Hans-CN"),
        ("sr_latn", "sr-Latn"),
        ("de", "de"),
        (" ja-jp ", "ja-JP"),
        ("de-CH-1996", "de-CH-1996"),
    ],
)
def test_normalize_locale(tag, canonical):
    assert normalize_locale(tag) == canonical


@pytest.mark.parametrize("tag", ["", "english", "e", "en-", "en--US", "en-US-x-private", "12-US", "en US", "en-USA1"])
def test_malformed_tags_are_refused(tag):
    with pytest.raises(ValueError, match="BCP 47"):
        normalize_locale(tag)


def test_serves_locale():
    assert serves_locale(None, "sw-KE") and serves_locale((), "sw-KE")
    assert serves_locale({"en"}, "en-GB") and serves_locale({"en"}, "en-AU")
    assert serves_locale({"pt-BR"}, "pt-br") and not serves_locale({"pt-BR"}, "pt-PT")
    assert not serves_locale({"en-US", "de"}, "fr-FR")


def test_local_routing_serves_eight_locales():
    pipelines = load_pipelines(ROOT / "config/pipelines", LOCAL, "routing.local.yaml")
    brief = parse_brief(brief_with(*LOCAL_LOCALES))
    assert pipeline_for(brief, pipelines).name == "campaign"
    # English goes to the neural voice and the language model first, the rest to espeak and the phrase bank.
    assert [p for p in LOCAL.tasks["voice"].route if LOCAL.serves(p, "en-GB")][0] == "local-piper"
    assert [p for p in LOCAL.tasks["voice"].route if LOCAL.serves(p, "it-IT")][0] == "local-voice"
    assert [p for p in LOCAL.tasks["concept"].route if LOCAL.serves(p, "nl-NL")][0] == "local-concept"
    assert LOCAL.speaking_rate(None, "en-US") == LOCAL.providers["local-piper"].speaking_rate()
    assert LOCAL.speaking_rate(None, "de-DE") == LOCAL.providers["local-voice"].speaking_rate()


def test_unserved_locale_names_variant_locale_and_tasks():
    pipelines = load_pipelines(ROOT / "config/pipelines", LOCAL, "routing.local.yaml")
    # Swahili: espeak has no Kenyan voice in our table and no phrase bank speaks it.
    brief = parse_brief(brief_with("en-US", "sw-KE"))
    with pytest.raises(PipelineError) as caught:
        pipeline_for(brief, pipelines)
    message = str(caught.value)
    assert "variants[1].locale: variant 'v1' asks for sw-KE" in message
    assert "concept (route: local-llm, local-concept)" in message and "voice (route: local-piper, local-kokoro, local-voice)" in message
    assert "image" not in message and "variants[0]" not in message
    # A pipeline without a voice needs only a concept writer for the locale.
    stills = parse_brief(brief_with("ru-RU", pipeline="stills"))
    with pytest.raises(PipelineError, match=r"variants\[0\].locale: variant 'v0' asks for ru-RU.*task concept") as caught:
        pipeline_for(stills, pipelines)
    assert "voice" not in str(caught.value)


def test_hosted_providers_declare_their_locales():
    config = parse_routing_config(
        """
version: 1
providers:
  writer: {adapter: openai-chat, model: gpt, base_url: "https://api.example.com/v1", api_key_env: KEY, locales: [en, pt-br, JA-jp]}
  speaker: {adapter: openai-speech, model: tts, base_url: "https://api.example.com/v1", api_key_env: KEY, locales: [en, pt-BR, ja-JP], words_per_second: 2.2}
  image: {adapter: local-procedural-image}
  refine: {adapter: local-torch-refiner}
  video: {adapter: local-pyav}
tasks:
  concept: {route: [writer]}
  image: {route: [image]}
  refine: {route: [refine]}
  voice: {route: [speaker]}
  video: {route: [video]}
"""
    )
    assert config.providers["writer"].locales == ("en", "pt-BR", "ja-JP")
    pipelines = load_pipelines(ROOT / "config/pipelines", config, "hosted.yaml")
    assert pipeline_for(parse_brief(brief_with("pt-BR", "ja-JP", "en-GB")), pipelines).name == "campaign"
    assert config.speaking_rate(None, "ja-JP") == 2.2
    with pytest.raises(PipelineError, match=r"variants\[0\].locale: variant 'v0' asks for fr-FR.*concept.*voice"):
        pipeline_for(parse_brief(brief_with("fr-FR")), pipelines)
    # Declaring locales is part of the task's identity (it decides who answers); not declaring keeps it.
    assert config.task_identity("concept") != config.model_copy(
        update={"providers": {**config.providers, "writer": config.providers["writer"].model_copy(update={"locales": None})}}
    ).task_identity("concept")


def test_bad_locale_in_routing_config_names_the_field():
    with pytest.raises(RoutingConfigError, match=r"providers.w.locales\[0\]|providers.w.locales"):
        parse_routing_config("version: 1\nproviders:\n  w: {adapter: local-concept, locales: [english]}\ntasks:\n  concept: {route: [w]}\n")


def test_route_rules_match_normalized_locales_and_languages():
    config = parse_routing_config(
        """
version: 1
providers:
  a: {adapter: local-concept}
  b: {adapter: local-concept}
tasks:
  concept: {route: [a], rules: [{locale: pt, route: [b]}, {locale: de-de, route: [b]}]}
"""
    )
    assert config.tasks["concept"].choose(None, "pt-BR") == ("b",)
    assert config.tasks["concept"].choose(None, "de-DE") == ("b",)
    assert config.tasks["concept"].choose(None, "en-US") == ("a",)
