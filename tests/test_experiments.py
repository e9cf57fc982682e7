"""Route experiments: the config, the arms, the code versions, and campaigns through Dagster against
the provider simulator (two simulators: the control's image provider and the candidate's, so each
route's calls are counted on their own)."""

import hashlib
import io
import json
import statistics
from pathlib import Path

import dagster as dg
import pytest
import yaml
from PIL import Image

from assets import stage_code_versions
from assets.report import ArmOutput, CampaignReportDoc, arm_figures, pairs_sheet
from assets.reuse import content_digest
from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from model_adapters.types import RefineRequest, request_hash
from orchestration.definitions import build_definitions
from resources.artifact_store import ArtifactStore
from resources.io_manager import JsonManifestIOManager
from resources.manifests import ImageArtifact, Provenance, manifest_from_json
from resources.policies.cooldown import PROCESS_COOLDOWNS
from resources.routing_config import RoutingConfigError, parse_routing_config
from tests.conftest import PROJECT_ROOT
from tests.helpers import register, run_campaign, shipped_pipelines

KEY = "sk-experiment-test"
CAMPAIGN = "lumen-kettle"
VARIANTS = 20
EXPERIMENT = "sim-b-images"
STAGES = ("concept", "draft_image", "refined_image")
# Small pictures keep twenty variants quick; the checks judge them at these sizes.
SMALL = {"ops": {"stills__variant_media": {"config": {"draft_image": {"short_side": 144}, "refined_image": {"min_short_side": 288}}}}}
FORCED = {"ops": {"stills__variant_media": {"config": {**SMALL["ops"]["stills__variant_media"]["config"], "force": True}}}}
CONTROL_PRICE, CANDIDATE_PRICE = 0.002, 0.005


def stills(stage: str) -> dg.AssetKey:
    return dg.AssetKey(["stills", stage])


@pytest.fixture(autouse=True)
def key_and_cooldowns(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    PROCESS_COOLDOWNS.reset()
    yield
    PROCESS_COOLDOWNS.reset()


@pytest.fixture
def twenty_variants(briefs_folder):
    """A 20-variant campaign on the stills pipeline (concept, draft image, refined image)."""
    ratios = ("9:16", "1:1", "16:9")
    brief = {
        "campaign_id": CAMPAIGN,
        "product": "Lumen Kettle",
        "audience": "tea drinkers who wake up early",
        "tone": "Calm",
        "palette": ["#20303f", "#e8c07d", "#f5f1e8"],
        "budget_usd": 25,
        "pipeline": "stills",
        "variants": [{"id": f"v{i:02d}", "locale": "en-US", "aspect_ratio": ratios[i % 3], "duration_s": 10} for i in range(VARIANTS)],
    }
    (briefs_folder / f"{CAMPAIGN}.yaml").write_text(yaml.safe_dump(brief))
    return [f"{CAMPAIGN}.v{i:02d}" for i in range(VARIANTS)]


def simulator() -> ProviderSimulator:
    return ProviderSimulator(SimulatorSettings.from_mapping({"api_key": KEY, "default": {"latency": {"ms": 0}}}))


def routing_file(
    tmp_path: Path, control_sim, candidate_sim, experiment: dict | None, name="routing.yaml", image_route=("image-a",)
) -> Path:
    """The shipped local routing, with two hosted image providers (one simulator each) and the
    phrase-bank concept writer (fast), and `experiment` on the image task."""
    config = yaml.safe_load((PROJECT_ROOT / "config" / "routing.local.yaml").read_text())
    hosted = {"adapter": "openai-images", "api_key_env": "OPENAI_API_KEY", "max_concurrency": 8}
    config["providers"]["image-a"] = {
        **hosted,
        "base_url": control_sim.base_url + "/v1",
        "model": "img-a",
        "price": {"per_image": CONTROL_PRICE},
    }
    # The candidate model sends the variant's seed: its pictures differ from the control's.
    config["providers"]["image-b"] = {
        **hosted,
        "base_url": candidate_sim.base_url + "/v1",
        "model": "img-b",
        "price": {"per_image": CANDIDATE_PRICE},
        "options": {"send_seed": True},
    }
    config["tasks"]["concept"] = {"route": ["local-concept"]}
    config["tasks"]["image"] = {"route": list(image_route)}
    if experiment is not None:
        config["experiments"] = {"image": experiment}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def expected_arm(partition_key: str, share: float, experiment: str = EXPERIMENT) -> str:
    """The arm, computed here from its definition: sha256 of the name and the key, as a fraction."""
    fraction = int.from_bytes(hashlib.sha256(f"{experiment}\n{partition_key}".encode()).digest()[:8], "big") / 2**64
    return "candidate" if fraction < share else "control"


def load_all(keys) -> dict[str, dict[str, object]]:
    load = JsonManifestIOManager().load_manifest
    return {key: {stage: load(stills(stage), key) for stage in ("brief", *STAGES)} for key in keys}


def stills_code_versions(definitions: dg.Definitions) -> dict[str, str | None]:
    """The stills pipeline's assets and their code versions, as the UI shows them."""
    graph = definitions.resolve_asset_graph()
    return {key.path[-1]: graph.get(key).code_version for key in graph.get_all_asset_keys() if key.path[0] == "stills"}


def latest_report(instance) -> CampaignReportDoc:
    (record,) = instance.fetch_materializations(stills("campaign_report"), limit=1).records
    metadata = record.asset_materialization.metadata
    assert metadata["campaigns"].value == [CAMPAIGN]
    assert "| control | candidate |" in metadata[f"{CAMPAIGN}/report"].value
    return CampaignReportDoc.model_validate_json(Path(metadata[f"{CAMPAIGN}/report_file"].value).read_bytes())


def refine_cache_entries(home: Path) -> list[dict]:
    """The response cache's refine answers: one per refine call that answered."""
    entries = [json.loads(p.read_text()) for p in (home / "artifacts").rglob("cache/*/*.json")]
    return [e for e in entries if e.get("task") == "refine"]


# --- the config --------------------------------------------------------------------------------


BASE = """
providers:
  a: {adapter: local-procedural-image}
  b: {adapter: local-procedural-image}
  voice: {adapter: local-espeak}
tasks:
  image: {route: [a]}
"""


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            {"image": {"name": "x", "control": ["a"], "candidate": ["zz"], "share": 0.5}},
            "experiments.image.candidate[0]: unknown provider 'zz'",
        ),
        (
            {"image": {"name": "x", "control": ["a"], "candidate": ["b"], "share": 1.5}},
            "experiments.image.share: Input should be less than or equal to 1",
        ),
        (
            {"image": {"name": "x", "control": ["a"], "candidate": ["b"], "share": 0.5, "mode": "shadow"}},
            "experiments.image: both share and mode: shadow",
        ),
        ({"image": {"name": "x", "control": ["a"], "candidate": ["b"]}}, "experiments.image: needs share"),
        (
            {"voice": {"name": "x", "control": ["voice"], "candidate": ["voice"], "mode": "shadow"}},
            "experiments.voice: control and candidate are the same route",
        ),
        (
            {"concept": {"name": "x", "control": ["a"], "candidate": ["b"], "share": 0.5}},
            "experiments.concept: task 'concept' has no route",
        ),
        (
            {"image": {"name": "x", "control": ["b"], "candidate": ["a"], "share": 0.5}},
            "experiments.image.control: [b] is not the task's route (tasks.image.route: [a])",
        ),
        (
            {"image": {"name": "x", "control": ["a"], "candidate": ["voice"], "share": 0.5}},
            "experiments.image.candidate[0]: provider 'voice' uses adapter 'local-espeak'",
        ),
        (
            {"image": {"name": "x", "control": ["a"], "candidate": ["b"], "share": 0.5, "sample": 2}},
            "experiments.image.sample: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_experiment_names_the_file_and_field(experiments, message):
    with pytest.raises(RoutingConfigError) as error:
        parse_routing_config(BASE + yaml.safe_dump({"experiments": experiments}), "exp.yaml")
    assert str(error.value).startswith("exp.yaml: ") and message in str(error.value)


def test_arms_come_from_the_partition_key_and_rules_keep_their_variants():
    config = parse_routing_config(
        BASE.replace("image: {route: [a]}", "image: {route: [a], rules: [{tier: draft, route: [b]}]}")
        + yaml.safe_dump({"experiments": {"image": {"name": EXPERIMENT, "control": ["a"], "candidate": ["b"], "share": 0.5}}})
    )
    keys = [f"c.v{i}" for i in range(200)]
    arms = {key: config.route_choice("image", "standard", "en-US", key) for key in keys}
    for key, choice in arms.items():
        assert choice.experiment == EXPERIMENT and choice.arm == expected_arm(key, 0.5)
        assert choice.route == (("b",) if choice.arm == "candidate" else ("a",))
        assert config.route_choice("image", "standard", "en-US", key) == choice  # asked again: the same arm
    assert 70 < sum(c.arm == "candidate" for c in arms.values()) < 130
    # A variant a rule routes is in no arm; a call outside any variant takes the control.
    assert config.route_choice("image", "draft", "en-US", keys[0]).arm is None
    assert config.route_choice("image", "standard", "en-US", None).arm == "control"
    # Share 0 and 1: nobody and everybody; another experiment name draws other arms.
    edge = lambda share, name=EXPERIMENT: parse_routing_config(  # noqa: E731
        BASE + yaml.safe_dump({"experiments": {"image": {"name": name, "control": ["a"], "candidate": ["b"], "share": share}}})
    )
    assert {edge(0.0).route_choice("image", None, None, k).arm for k in keys} == {"control"}
    assert {edge(1.0).route_choice("image", None, None, k).arm for k in keys} == {"candidate"}
    other = edge(0.5, "another")
    assert [other.route_choice("image", None, None, k).arm for k in keys] != [arms[k].arm for k in keys]


def test_the_code_version_shows_the_experiment_and_promoting_changes_only_the_image_stage(tmp_path):
    pipelines = shipped_pipelines()
    sim = type("Sim", (), {"base_url": "http://127.0.0.1:9"})()  # never called: code versions only
    share = {"name": EXPERIMENT, "control": ["image-a"], "candidate": ["image-b"], "share": 0.5}
    configs = {
        "before": routing_file(tmp_path, sim, sim, None, "before.yaml"),
        "share": routing_file(tmp_path, sim, sim, share, "share.yaml"),
        "share_30": routing_file(tmp_path, sim, sim, {**share, "share": 0.3}, "share_30.yaml"),
        "shadow": routing_file(tmp_path, sim, sim, {**share, "share": None, "mode": "shadow"}, "shadow.yaml"),
        "promoted": routing_file(tmp_path, sim, sim, None, "promoted.yaml", image_route=("image-b",)),
    }
    routing = {name: parse_routing_config(path.read_text(), str(path)) for name, path in configs.items()}
    for pipeline in pipelines.values():
        versions = {name: stage_code_versions(pipeline, config) for name, config in routing.items()}
        image_stages = {stage.name for stage in pipeline.stages if stage.task == "image"}
        for one, other in [("before", "share"), ("share", "share_30"), ("share", "shadow"), ("share", "promoted"), ("before", "promoted")]:
            changed = {stage for stage in versions[one] if versions[one][stage] != versions[other][stage]}
            assert changed == image_stages, (pipeline.name, one, other, changed)
    # The report asset exists while an experiment runs, on the pipelines that use its task.
    assert stills("campaign_report") not in build_definitions(configs["before"]).resolve_asset_graph().get_all_asset_keys()
    assert stills("campaign_report") in build_definitions(configs["share"]).resolve_asset_graph().get_all_asset_keys()


def test_report_figures_and_pairs_sheet_from_hand_made_outputs():
    def provenance(provider, cost, latency, arm):
        return Provenance(
            task="voice",
            provider="p",
            adapter_id=provider,
            model="m",
            model_version="1",
            request_hash="h",
            latency_s=latency,
            cost_usd=cost,
            experiment="voices",
            experiment_arm=arm,
        )

    outputs = [
        ArmOutput(
            "c.a",
            provenance("v1", 0.01, 0.5, "candidate"),
            ["loudness", "speech_intelligible"],
            {"speech_intelligible.word_error_rate": 0.1},
            {"on_brief.cosine": 0.5},
        ),
        ArmOutput(
            "c.b",
            provenance("v1", 0.03, 1.5, "candidate"),
            ["loudness"],
            {"speech_intelligible.word_error_rate": 0.7},
            {"on_brief.cosine": 0.7},
        ),
        ArmOutput("c.c", provenance("v2", 0.02, 0.7, "candidate"), ["loudness", "speech_intelligible"], {}, {}),
    ]
    figures = arm_figures("candidate", outputs, ["loudness", "speech_intelligible"])
    assert figures.variants == 3 and figures.providers == {"v1": 2, "v2": 1}
    assert figures.total_cost_usd == pytest.approx(0.06) and figures.mean_cost_usd == pytest.approx(0.02)
    assert figures.mean_latency_s == pytest.approx(0.9) and figures.p50_latency_s == pytest.approx(0.7)
    assert figures.check_pass_rates == {"loudness": 1.0, "speech_intelligible": pytest.approx(0.6667)}
    assert figures.word_error_rate == pytest.approx(0.4) and figures.word_error_rate_measured == 2
    assert figures.on_brief_score == pytest.approx(0.6) and figures.on_brief_measured == 2

    def png(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (90, 160), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    sheet = pairs_sheet("c: voices", ("control", "candidate"), [(("a", png("red")), ("a", png("blue"))), (("b", png("red")), None)])
    # Control left, candidate right; the second row's candidate side is empty.
    from assets.rollup import CELL, PAD

    def pixel(column, row):
        return sheet.getpixel((PAD + column * (CELL + PAD) + CELL // 2, 90 + row * (CELL + 30 + PAD) + CELL // 2))

    assert pixel(0, 0) == (255, 0, 0) and pixel(1, 0) == (0, 0, 255) and pixel(0, 1) == (255, 0, 0)
    assert pixel(1, 1) == (24, 26, 32)  # the background


# --- campaigns through Dagster -----------------------------------------------------------------


def assert_report_is_the_sum_of_the_manifests(report, manifests, arms: dict[str, list[str]], shadow: bool) -> None:
    (experiment,) = report.experiments
    assert experiment.experiment == EXPERIMENT and experiment.stage == "draft_image" and experiment.task == "image"
    assert experiment.mode == ("shadow" if shadow else "share") and experiment.outside == ()
    for arm in ("control", "candidate"):
        figures = getattr(experiment, arm)
        keys = arms[arm]
        assert list(figures.partition_keys) == keys and figures.variants == len(keys) and figures.failed == 0
        drafts = [manifests[key]["draft_image"] for key in keys]
        made = [d.shadow.provenance if shadow and arm == "candidate" else d.provenance for d in drafts]
        costs, latencies = [p.cost_usd for p in made], [p.latency_s for p in made]
        assert figures.total_cost_usd == pytest.approx(sum(costs), abs=1e-9)
        assert figures.total_cost_usd == pytest.approx(len(keys) * (CANDIDATE_PRICE if arm == "candidate" else CONTROL_PRICE))
        assert figures.mean_cost_usd == pytest.approx(sum(costs) / len(keys), abs=1e-9)
        assert figures.mean_latency_s == pytest.approx(sum(latencies) / len(keys), abs=1e-4)
        assert figures.p50_latency_s == pytest.approx(statistics.median(latencies), abs=1e-4)
        assert figures.providers == {"image-b" if arm == "candidate" else "image-a": len(keys)}
        passed = [d.shadow.checks_passed if shadow and arm == "candidate" else d.checks_passed for d in drafts]
        assert figures.check_pass_rates == {"png_valid": pytest.approx(sum("png_valid" in p for p in passed) / len(keys), abs=1e-4)}
        assert figures.check_pass_rates["png_valid"] == 1.0
        if shadow:  # the arms are two makes of the image stage, which measures no on-brief score
            assert figures.on_brief_score is None
        else:  # the arm's variants' concepts, scored by their on_brief check
            scores = [manifests[key]["concept"].check_measurements["on_brief.cosine"] for key in keys]
            assert figures.on_brief_measured == len(keys)
            assert figures.on_brief_score == pytest.approx(sum(scores) / len(scores), abs=1e-4)
        assert figures.word_error_rate is None  # no voice in the stills pipeline
    # The sheet: the pictures in pairs, control left.
    with Image.open(io.BytesIO(ArtifactStore().get(experiment.contact_sheet))) as sheet:
        rows = len(arms["control"]) if shadow else max(len(arms["control"]), len(arms["candidate"]))
        assert sheet.format == "PNG" and sheet.height > rows * 360


@pytest.mark.e2e
def test_a_half_share_keeps_its_arms_across_runs_reports_them_and_promotes(studio_home, twenty_variants, tmp_path):
    keys = twenty_variants
    arms = {arm: [k for k in sorted(keys) if expected_arm(k, 0.5) == arm] for arm in ("control", "candidate")}
    assert arms["control"] and arms["candidate"]
    experiment = {"name": EXPERIMENT, "control": ["image-a"], "candidate": ["image-b"], "share": 0.5}
    with simulator() as sim_a, simulator() as sim_b, dg.instance_for_test() as instance:
        definitions = build_definitions(routing_file(tmp_path, sim_a, sim_b, experiment))
        assert sorted(register(instance, definitions)) == sorted(keys)
        assert run_campaign(instance, keys, SMALL, definitions, job_name="produce_stills").success

        # Each route made exactly its arm's pictures, one call each.
        assert sim_a.stats()["calls_by_group"] == {"openai_images": len(arms["control"])}
        assert sim_b.stats()["calls_by_group"] == {"openai_images": len(arms["candidate"])}
        manifests = load_all(keys)
        for arm, arm_keys in arms.items():
            for key in arm_keys:
                draft = manifests[key]["draft_image"].provenance
                assert (draft.experiment, draft.experiment_arm) == (EXPERIMENT, arm)
                assert draft.adapter_id == ("image-b" if arm == "candidate" else "image-a")
                # Other tasks ran no experiment: their provenance says so.
                assert manifests[key]["refined_image"].provenance.experiment is None
        # The UI names the experiment and the arm on every draft image.
        for record in instance.fetch_materializations(stills("draft_image"), limit=100).records:
            metadata = record.asset_materialization.metadata
            assert metadata["experiment"].value == EXPERIMENT
            assert metadata["experiment_arm"].value == expected_arm(record.partition_key, 0.5)
        assert_report_is_the_sum_of_the_manifests(latest_report(instance), manifests, arms, shadow=False)

        # Run again, everything made again: the same arms, from the response cache.
        sim_a.reset_stats(), sim_b.reset_stats()
        assert run_campaign(instance, keys, FORCED, definitions, job_name="produce_stills").success
        again = load_all(keys)
        for key in keys:
            provenance = again[key]["draft_image"].provenance
            assert provenance.experiment_arm == expected_arm(key, 0.5) and provenance.cache_hit
        assert sum(sim_a.stats()["calls_by_group"].values()) + sum(sim_b.stats()["calls_by_group"].values()) == 0

        # Promote: the candidate becomes the image route, the experiment goes. Only the image stage's
        # code version changes; a run remakes the images (the candidate arm's from the cache), and
        # of what follows only the refined images whose picture changed: the control arm's.
        promoted = build_definitions(routing_file(tmp_path, sim_a, sim_b, None, "promoted.yaml", image_route=("image-b",)))
        before, after = stills_code_versions(definitions), stills_code_versions(promoted)
        assert {name for name in after if after[name] != before.get(name)} == {"draft_image"}
        assert "campaign_report" not in after
        refined_before = {key: again[key]["refined_image"] for key in keys}
        assert run_campaign(instance, keys, SMALL, promoted, job_name="produce_stills").success
        assert sum(sim_a.stats()["calls_by_group"].values()) == 0
        assert sim_b.stats()["calls_by_group"] == {"openai_images": len(arms["control"])}
        promoted_manifests = load_all(keys)
        for key in keys:
            now = promoted_manifests[key]
            assert now["draft_image"].provenance.adapter_id == "image-b" and now["draft_image"].provenance.experiment is None
            assert now["concept"] == again[key]["concept"]  # reused: not made again
            same_picture = expected_arm(key, 0.5) == "candidate"
            assert (content_digest(now["draft_image"]) == content_digest(again[key]["draft_image"])) == same_picture
            assert (now["refined_image"] == refined_before[key]) == same_picture, key


@pytest.mark.e2e
def test_shadow_mode_calls_both_routes_and_nothing_downstream_reads_the_candidate(studio_home, twenty_variants, tmp_path):
    keys = twenty_variants
    experiment = {"name": EXPERIMENT, "control": ["image-a"], "candidate": ["image-b"], "mode": "shadow"}
    with simulator() as sim_a, simulator() as sim_b, dg.instance_for_test() as instance:
        definitions = build_definitions(routing_file(tmp_path, sim_a, sim_b, experiment))
        register(instance, definitions)
        assert run_campaign(instance, keys, SMALL, definitions, job_name="produce_stills").success

        # Twice the calls for the image task: every variant on both routes.
        assert sim_a.stats()["calls_by_group"] == {"openai_images": VARIANTS}
        assert sim_b.stats()["calls_by_group"] == {"openai_images": VARIANTS}
        manifests = load_all(keys)
        store = ArtifactStore()
        for key in keys:
            draft, refined = manifests[key]["draft_image"], manifests[key]["refined_image"]
            assert (draft.provenance.adapter_id, draft.provenance.experiment_arm) == ("image-a", "control")
            shadow = draft.shadow
            assert shadow.error is None and shadow.experiment == EXPERIMENT
            assert (shadow.provenance.adapter_id, shadow.provenance.experiment_arm) == ("image-b", "candidate")
            assert shadow.provenance.cost_usd == pytest.approx(CANDIDATE_PRICE) and shadow.checks_passed == ("png_valid",)
            # The candidate's output is stored: its manifest, and its PNG at the control's size.
            candidate = manifest_from_json(store.get(shadow.manifest))
            assert isinstance(candidate, ImageArtifact) and candidate.provenance == shadow.provenance
            with Image.open(io.BytesIO(store.get(candidate.artifact))) as png:
                assert png.format == "PNG" and png.size == (draft.width, draft.height)
            assert candidate.artifact.sha256 != draft.artifact.sha256  # another model's picture
            # The refined image was made from the control's picture (the request names its sha256).
            brief, concept = manifests[key]["brief"], manifests[key]["concept"]
            asked = RefineRequest(
                source_sha256=draft.artifact.sha256,
                min_short_side=288,
                aspect_ratio=brief.aspect_ratio,
                palette=brief.palette,
                headline=concept.headline,
                seed=brief.seed,
            )
            assert refined.provenance.request_hash == request_hash(asked)
        # One refine call per variant: none for the candidates' pictures.
        refines = refine_cache_entries(studio_home)
        assert len(refines) == VARIANTS
        assert len(instance.fetch_materializations(stills("refined_image"), limit=100).records) == VARIANTS
        # The UI shows the candidate beside the control.
        for record in instance.fetch_materializations(stills("draft_image"), limit=100).records:
            metadata = record.asset_materialization.metadata
            assert metadata["experiment_arm"].value == "control" and metadata["shadow_provider"].value == "image-b"
        report = latest_report(instance)
        assert_report_is_the_sum_of_the_manifests(report, manifests, {"control": sorted(keys), "candidate": sorted(keys)}, shadow=True)
