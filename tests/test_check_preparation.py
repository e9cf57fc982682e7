"""A check's model loads in the background when its stage first makes something in a run
(`CheckKind.prepare`), once per stage and run, with the run's briefs; a preparation that fails
changes nothing (the check meets the error itself); the shipped checks' preparations load
MiniLM and the briefs' texts, and Whisper only for a run with a variant it can judge."""

from __future__ import annotations

import asyncio
import threading
import time

from assets.engine import Engine, Made, Node
from assets.stages import CheckKind, CheckOutcome, Pipeline, PipelineStage, StageCall, StageKind
from assets.variant_media import _StageHooks
from resources.artifact_store import ArtifactStore
from resources.manifests import ImageArtifact, Provenance, VariantBriefDoc


def _brief(variant: str, locale: str = "en-US", product: str = "Lamp") -> VariantBriefDoc:
    return VariantBriefDoc(
        partition_key=f"c.{variant}",
        campaign_id="c",
        variant_id=variant,
        brief_path="b.yaml",
        brief_sha256="0" * 64,
        fingerprint="f",
        product=product,
        audience="readers",
        tone="warm",
        palette=("#000000",),
        banned_terms=(),
        budget_usd=1.0,
        locale=locale,
        voice="default",
        aspect_ratio="1:1",
        duration_s=10.0,
        tier="standard",
        seed=7,
    )


async def _made(call: StageCall):
    await asyncio.sleep(0.05)  # the provider's answer, while the preparation runs
    ref = await call.off_loop(call.artifacts.put, b"not read", extension=".png", media_type="image/png")
    provenance = Provenance(task="image", provider="p", adapter_id="a", model="m", model_version="1", request_hash="h", latency_s=0.05)
    return ImageArtifact(partition_key=call.partition_key, artifact=ref, width=8, height=8, aspect_ratio="1:1", provenance=provenance), {}


def _run(prepare, evaluate, keys: list[str]) -> list:
    check = CheckKind("judged", True, lambda s: "", evaluate, prepare=prepare)
    kind = StageKind("maker", "", {}, ImageArtifact, None, _made, checks=(check,))
    stage = PipelineStage("made", kind, {}, None, None, (("judged", True, True),), "")
    pipeline = Pipeline("prepared", "test", "", ("prepared",), "prepared_variants", (stage,))
    briefs = {key: _brief(key.split(".")[1]) for key in keys}
    hooks = _StageHooks(pipeline, {"made": "1"}, {"made": None}, list(pipeline.checks()), briefs, ArtifactStore(), None, None)
    events: list = []

    async def step() -> None:
        nodes = [Node("made", {})]
        await Engine(nodes, ["made"], make=hooks.make, check=hooks.check, load_stored=hooks.load_stored, emit=events.append).run(keys)

    asyncio.run(step())
    return events


def test_a_checks_model_loads_once_per_run_in_its_own_thread_while_the_stage_makes():
    prepared: list[tuple[str, list[str]]] = []
    loaded = threading.Event()

    def prepare(briefs):
        prepared.append((threading.current_thread().name, [brief.partition_key for brief in briefs]))
        time.sleep(0.02)
        loaded.set()

    def evaluate(item):
        # The model was loading before the first answer came back: a verdict waits at most
        # for the rest of it (a real check's load waits on the model's own lock).
        assert loaded.wait(5)
        return CheckOutcome(True, {"problems": []})

    keys = ["c.a", "c.b", "c.c"]
    events = _run(prepare, evaluate, keys)
    assert sorted(e.key for e in events if isinstance(e, Made)) == keys
    assert prepared == [("prepare-made-checks", keys)]


def test_a_failed_preparation_leaves_the_check_to_meet_the_error():
    def prepare(briefs):
        raise FileNotFoundError("no model at /nowhere")

    def evaluate(item):
        raise FileNotFoundError("no model at /nowhere")

    (made,) = [e for e in _run(prepare, evaluate, ["c.a"]) if isinstance(e, Made)]
    # The check's own failure, reported for the variant as it was before there were preparations.
    assert made.blocked == ("judged: could not be checked: FileNotFoundError: no model at /nowhere",)


def test_the_shipped_preparations_load_minilm_with_the_briefs_texts_and_whisper_only_for_english(monkeypatch):
    from assets import checks
    from assets.stage_kinds import voiceover
    from assets.stage_kinds.concept import CONCEPT
    from model_adapters import local_transcribe

    on_brief = CONCEPT.check("on_brief")
    briefs = [_brief("a", product="Kettle"), _brief("b", product="Kettle"), _brief("c", product="Teapot")]
    embedded: list[str] = []
    monkeypatch.setattr(checks, "_embedding", lambda text: embedded.append(text))
    assert on_brief.prepare is checks.prepare_semantic_alignment
    on_brief.prepare(briefs)
    assert embedded == [checks.brief_text("Kettle", "readers", "warm"), checks.brief_text("Teapot", "readers", "warm")]

    loads: list[str] = []

    class Recognizer:
        def load(self):
            loads.append("whisper")

    monkeypatch.setattr(local_transcribe, "get_transcriber", Recognizer)
    speech = voiceover.SPEECH_INTELLIGIBLE
    speech.prepare([_brief("d", locale="de-DE"), _brief("j", locale="ja-JP")])
    assert loads == []
    speech.prepare([_brief("d", locale="de-DE"), _brief("g", locale="en-GB")])
    assert loads == ["whisper"]


def test_the_real_minilm_preparation_embeds_what_the_check_then_reads():
    """Unmocked: after the preparation the brief's text is a cache hit for the check."""
    from assets import checks
    from assets.stage_kinds.concept import CONCEPT

    brief = _brief("z", product="Preparation test lamp")
    CONCEPT.check("on_brief").prepare([brief])
    before = checks._embedding.cache_info().hits
    checks._embedding(checks.brief_text(brief.product, brief.audience, brief.tone))
    assert checks._embedding.cache_info().hits == before + 1
