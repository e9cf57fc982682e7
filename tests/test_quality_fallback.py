"""Quality-aware fallback end to end: a provider whose answers are well formed but off-brief,
through the stills pipeline, the response cache, the ledger and a forced re-run; the budget
check that never sends an answer back; an input that a later stage proves broken."""

import asyncio

import dagster as dg
import pytest
import yaml

from assets.engine import Engine, Failed, Made, Node
from assets.reuse import RecordedMaterialization, ReusePlan
from assets.stages import BrokenInput, Pipeline, PipelineStage, StageCall, StageKind
from assets.variant_media import _StageHooks
from model_adapters import registry
from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import AdapterInfo, ImageRequest, ImageResult, Price
from orchestration.definitions import build_definitions
from resources.artifact_store import ArtifactStore
from resources.io_manager import JsonManifestIOManager
from resources.manifests import ImageArtifact, VariantBriefDoc
from resources.model_router import ModelRouter
from resources.policies.budget import CampaignBudget
from resources.policies.cache import ResponseCache
from resources.policies.cooldown import PROCESS_COOLDOWNS
from resources.policies.shared_limits import shared_limits_for
from resources.routing_config import parse_routing_config
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.helpers import register, run_campaign, shipped_pipelines

KEY = "sk-quality-test"
CONCEPT = dg.AssetKey(["stills", "concept"])
NO_CONFIG = {"ops": {}}


@pytest.fixture(autouse=True)
def key_and_cooldowns(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    PROCESS_COOLDOWNS.reset()
    yield
    PROCESS_COOLDOWNS.reset()


@pytest.fixture
def stills_campaign(briefs_folder):
    """The sample campaign's brief, on the stills pipeline (concept, draft and refined image)."""
    brief = yaml.safe_load((SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml").read_text())
    brief["pipeline"] = "stills"
    (briefs_folder / f"{SAMPLE_CAMPAIGN}.yaml").write_text(yaml.safe_dump(brief))
    return brief


def routing_with_hosted_concept(sim: ProviderSimulator, tmp_path, concept_route: list[str]):
    """The local routing with an OpenAI-compatible concept provider (the simulator) in front."""
    config = yaml.safe_load((PROJECT_ROOT / "config" / "routing.local.yaml").read_text())
    config["providers"]["hosted-concept"] = {
        "adapter": "openai-chat",
        "base_url": sim.base_url + "/v1",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "max_concurrency": 4,
        "price": {"per_input_token": 0.00000015, "per_output_token": 0.0000006},
    }
    config["tasks"]["concept"] = {"route": concept_route}
    path = tmp_path / "routing.quality.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def off_brief_simulator() -> ProviderSimulator:
    return ProviderSimulator(SimulatorSettings.from_mapping({"api_key": KEY, "off_brief_share": 1.0, "default": {"latency": {"ms": 5}}}))


@pytest.mark.e2e
def test_off_brief_answers_fall_back_are_never_cached_and_are_charged(studio_home, stills_campaign, tmp_path):
    manifests = JsonManifestIOManager()
    with off_brief_simulator() as sim, dg.instance_for_test() as instance:
        definitions = build_definitions(routing_with_hosted_concept(sim, tmp_path, ["hosted-concept", "local-concept"]))
        keys = register(instance, definitions)
        assert len(keys) == 4
        assert run_campaign(instance, keys, NO_CONFIG, definitions, job_name="produce_stills").success

        # Each variant: the hosted answer rejected by on_brief, asked again with a new seed, rejected
        # again (quality_retries 1), then the local concept writer's answer stands.
        assert sim.stats()["calls_by_group"]["openai_chat"] == 2 * len(keys)
        first = {key: manifests.load_manifest(CONCEPT, key) for key in keys}
        spec_seeds = {key: manifests.load_manifest(dg.AssetKey(["stills", "brief"]), key).seed for key in keys}
        for key, concept in first.items():
            provenance = concept.provenance
            assert provenance.adapter_id == "local-concept" and "on_brief" in concept.checks_passed
            rejected = provenance.rejected
            assert [r.provider for r in rejected] == ["hosted-concept", "hosted-concept"]
            assert rejected[0].seed == spec_seeds[key] and rejected[1].seed != rejected[0].seed
            for answer in rejected:
                assert answer.answered.startswith("headline 'Placeholder headline', script 'Lorem ipsum")
                assert len(answer.rejected_by) == 1 and answer.rejected_by[0].startswith("on_brief: ")
                assert answer.cost_usd > 0 and not answer.cache_hit
            assert concept.history == ()  # the first make of this stage for the variant

        # The UI: the materialization that stands lists the rejected answers.
        event = instance.get_latest_materialization_event(CONCEPT)
        table = event.asset_materialization.metadata["rejected_answers"].value
        assert table.count("| hosted-concept |") == 2 and "on_brief" in table

        # The ledger charged every rejected answer: the provider answered and bills it.
        totals = shared_limits_for().totals(SAMPLE_CAMPAIGN)
        charged = sum(answer.cost_usd for concept in first.values() for answer in concept.provenance.rejected)
        # (provenance rounds each cost to 6 decimals; one call costs about 1e-4)
        assert totals["spent_usd"] == pytest.approx(charged, abs=1e-5) and charged > 0

        # Forced re-run: no rejected answer is served from the cache, the primary is asked again;
        # the local answer (cached) stands; the first make's provenance is kept (appended).
        sim.reset_stats()
        forced = {"ops": {"stills__variant_media": {"config": {"force": True}}}}
        assert run_campaign(instance, keys, forced, definitions, job_name="produce_stills").success
        assert sim.stats()["calls_by_group"]["openai_chat"] == 2 * len(keys)
        for key in keys:
            again = manifests.load_manifest(CONCEPT, key)
            assert again.provenance.adapter_id == "local-concept" and again.provenance.cache_hit
            assert again.history == (first[key].provenance,)
            # The same failure reads the same on both runs.
            assert [(r.answered, r.rejected_by, r.seed) for r in again.provenance.rejected] == [
                (r.answered, r.rejected_by, r.seed) for r in first[key].provenance.rejected
            ]
        assert shared_limits_for().totals(SAMPLE_CAMPAIGN)["spent_usd"] == pytest.approx(2 * charged, abs=2e-5)


@pytest.mark.e2e
def test_an_exhausted_route_blocks_the_variant_naming_every_answer(studio_home, stills_campaign, tmp_path):
    with off_brief_simulator() as sim, dg.instance_for_test() as instance:
        definitions = build_definitions(routing_with_hosted_concept(sim, tmp_path, ["hosted-concept"]))
        keys = register(instance, definitions)
        result = run_campaign(instance, keys, NO_CONFIG, definitions, job_name="produce_stills")
        assert not result.success
        assert sim.stats()["calls_by_group"]["openai_chat"] == 2 * len(keys)
        # The last answer is recorded with its failed check; nothing downstream was made.
        evaluations = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == "on_brief"
        ]
        assert len(evaluations) == len(keys) and not any(e.passed for e in evaluations)
        warnings = [e.message for e in instance.all_logs(result.run_id) if e.user_message and "failed a blocking check" in e.user_message]
        assert len(warnings) == len(keys)
        for message in warnings:
            assert message.count("hosted-concept (seed") == 2 and "answered headline 'Placeholder headline'" in message
            assert "rejected by on_brief: " in message
        assert instance.get_latest_materialization_event(dg.AssetKey(["stills", "draft_image"])) is None


@pytest.mark.e2e
def test_a_failed_budget_check_never_triggers_a_fallback(studio_home, stills_campaign, tmp_path):
    """The budget check judges the campaign's spend, not a provider's answer: over budget (a provider
    billed more than its estimate, say), it fails and nothing is asked again or made again."""
    budget_check = dg.AssetCheckKey(dg.AssetKey(["stills", "refined_image"]), "campaign_within_budget")
    job = dg.define_asset_job("budget_check", selection=dg.AssetSelection.checks(budget_check))
    manifests = JsonManifestIOManager()
    on_brief = ProviderSimulator(SimulatorSettings.from_mapping({"api_key": KEY, "default": {"latency": {"ms": 5}}}))
    with on_brief as sim, dg.instance_for_test() as instance:
        routing = routing_with_hosted_concept(sim, tmp_path, ["hosted-concept", "local-concept"])
        definitions = dg.Definitions.merge(build_definitions(routing), dg.Definitions(jobs=[job]))
        keys = register(instance, definitions)
        assert run_campaign(instance, keys, NO_CONFIG, definitions, job_name="produce_stills").success
        made = {key: manifests.load_manifest(CONCEPT, key) for key in keys}
        assert all(m.provenance.adapter_id == "hosted-concept" and m.provenance.rejected == () for m in made.values())

        ledger = shared_limits_for()
        token = ledger.reserve(CampaignBudget(SAMPLE_CAMPAIGN, stills_campaign["budget_usd"]), 0.0)
        ledger.settle(SAMPLE_CAMPAIGN, token, stills_campaign["budget_usd"] + 5.0)
        sim.reset_stats()
        result = run_campaign(instance, keys, NO_CONFIG, definitions, job_name="budget_check")
        verdicts = result.get_asset_check_evaluations()
        assert len(verdicts) == len(keys) and not any(v.passed for v in verdicts)
        assert sum(sim.stats()["calls_by_group"].values()) == 0
        assert {key: manifests.load_manifest(CONCEPT, key) for key in keys} == made
        assert len(instance.fetch_materializations(CONCEPT, limit=100).records) == len(keys)
    # Only a stage's own checks can send its answer back; the budget check is none of them.
    for pipeline in shipped_pipelines().values():
        assert all(check.name != "campaign_within_budget" for check in pipeline.checks())


class SvgImages:
    """An image provider that answers an SVG where a PNG was asked for."""

    calls = 0

    def __init__(self, adapter_id: str, max_concurrency: int = 1):
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="image",
            provider="fake",
            model="svg",
            model_version="1",
            price=Price(),
            max_concurrency=max_concurrency,
        )

    async def generate(self, request: ImageRequest) -> ImageResult:
        SvgImages.calls += 1
        return ImageResult(
            png=b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', width=request.width, height=request.height
        )

    async def aclose(self):
        pass


async def _store_unchecked(call: StageCall):
    """A stage that stores what the provider answered without decoding it (no check either)."""
    routed = await call.call_model(ImageRequest(prompt="p", width=8, height=8, palette=("#000000",), seed=call.spec.seed))
    ref = await call.off_loop(call.artifacts.put, routed.value.png, extension=".png", media_type="image/png")
    return ImageArtifact(
        partition_key=call.partition_key, artifact=ref, width=8, height=8, aspect_ratio="1:1", provenance=routed.provenance
    ), {}


async def _read_image(call: StageCall):
    await call.input_bytes("image", call.inputs["image"].artifact)
    raise AssertionError("the broken input was read as if it were a PNG")


def test_an_input_a_later_stage_proves_broken_is_never_served_or_reused_again(studio_home, monkeypatch):
    monkeypatch.setitem(registry.ADAPTER_KINDS, "svg-image", registry.AdapterKind("svg-image", "image", f"{__name__}:SvgImages", "1"))
    SvgImages.calls = 0
    routing = parse_routing_config("providers: {svg: {adapter: svg-image}}\ntasks: {image: {route: [svg]}}\n")
    router = ModelRouter.from_config(routing, "test")
    maker = StageKind("unchecked", "", {}, ImageArtifact, TASK_SPECS["image"], _store_unchecked)
    reader = StageKind("reader", "", {"image": ImageArtifact}, ImageArtifact, None, _read_image)
    pipeline = Pipeline(
        "broken",
        "test",
        "",
        ("broken",),
        "broken_variants",
        (
            PipelineStage("made", maker, {}, None, "image", (), ""),
            PipelineStage("read", reader, {"image": "made"}, None, None, (), ""),
        ),
    )
    brief = VariantBriefDoc(
        partition_key="c.v",
        campaign_id="c",
        variant_id="v",
        brief_path="b.yaml",
        brief_sha256="0" * 64,
        fingerprint="f",
        product="Lamp",
        audience="readers",
        tone="warm",
        palette=("#000000",),
        banned_terms=(),
        budget_usd=1.0,
        locale="en-US",
        voice="default",
        aspect_ratio="1:1",
        duration_s=10.0,
        tier="standard",
        seed=7,
    )
    artifacts = ArtifactStore()
    stored: dict = {}

    def load_stored(stage, key):
        if (stage, key) not in stored:
            raise FileNotFoundError(stage)
        return stored[(stage, key)]

    async def run_step() -> list:
        events: list = []
        hooks = _StageHooks(
            pipeline, {"made": "1", "read": "1"}, {"made": None, "read": None}, [], {"c.v": brief}, artifacts, None, load_stored
        )
        async with router.session(store=artifacts) as session:
            hooks.session = session
            nodes = [Node(stage.name, dict(stage.inputs)) for stage in pipeline.stages]
            await Engine(
                nodes, ["made", "read"], make=hooks.make, check=hooks.check, load_stored=hooks.load_stored, emit=events.append
            ).run(["c.v"])
        return events

    events = asyncio.run(run_step())
    (made,) = [e for e in events if isinstance(e, Made)]
    (failed,) = [e for e in events if isinstance(e, Failed)]
    assert isinstance(failed.error, BrokenInput)
    assert str(failed.error).startswith("input 'image' is unusable: declared image/png, but received 62 bytes that look like SVG")
    cache = ResponseCache(artifacts)
    assert cache.is_rejected(made.manifest.provenance.cache_key)
    assert "proved broken by read" in cache.read(made.manifest.provenance.cache_key)["rejected"]
    # The stored output is not reused (its answer was proved broken) ...
    stored[("made", "c.v")] = made.manifest
    plan = ReusePlan(
        {"made": {"c.v": RecordedMaterialization(made.manifest.input_fingerprint, {})}}, {"made": frozenset()}, load_stored, artifacts
    )
    assert plan.stored_if_unchanged("made", "c.v", made.manifest.input_fingerprint) is None
    # ... and the next run asks the provider again instead of the cache, keeping the first make's provenance.
    events = asyncio.run(run_step())
    (again,) = [e for e in events if isinstance(e, Made)]
    assert SvgImages.calls == 2 and not again.manifest.provenance.cache_hit
    assert again.manifest.history == (made.manifest.provenance,)
