import asyncio

import pytest

from assets.checks import banned_terms_in
from model_adapters.local_concept import CAPTION_LINE_CHARS, LocalConceptWriter, concept_word_budget
from model_adapters.types import ConceptRequest

BASE = dict(
    campaign_id="c",
    variant_id="v",
    product="Aurora Lamp",
    audience="night owls",
    tone="Warm",
    palette=("#ff8800", "#102030"),
    locale="en-US",
    aspect_ratio="9:16",
    duration_s=15.0,
    seed=7,
)


def write(**changes):
    return asyncio.run(LocalConceptWriter().write(ConceptRequest(**{**BASE, **changes})))


def test_same_request_same_concept_other_seed_other_concept():
    assert write() == write()
    assert {write(seed=s).script for s in range(6)}.__len__() > 1


@pytest.mark.parametrize("duration", [6.0, 15.0, 30.0])
def test_script_is_sized_to_the_duration(duration):
    words = len(write(duration_s=duration).script.split())
    budget = concept_word_budget(duration)
    assert budget * 0.6 <= words <= budget + 2


def test_banned_terms_never_appear():
    for seed in range(20):
        concept = write(seed=seed, banned_terms=("manual", "day", "design"))
        assert not banned_terms_in({"script": concept.script, "headline": concept.headline}, ("manual", "day", "design"))


def test_banned_term_in_the_product_is_an_error():
    with pytest.raises(ValueError, match="banned term 'lamp'"):
        write(banned_terms=("lamp",))


def test_locale_language_caption_lines_and_prompt():
    german = write(locale="de-DE")
    assert "für" in german.script
    assert all(len(line) <= CAPTION_LINE_CHARS for line in german.caption_lines)
    assert " ".join(german.caption_lines).split() == german.script.split()
    assert "no text" in german.image_prompt and "#ff8800" in german.image_prompt
    with pytest.raises(ValueError, match="no phrases for locale 'ru-RU'"):
        write(locale="ru-RU")
