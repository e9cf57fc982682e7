"""Pipeline files: the shipped ones load, the schema is published, and each kind of mistake is named."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from orchestration.pipelines import (
    SCHEMA_FILE,
    PipelineError,
    load_pipelines,
    parse_pipeline_spec,
    pipeline_json_schema,
    resolve_pipeline,
)
from resources.routing_config import load_routing_config, parse_routing_config
from tests.conftest import PROJECT_ROOT

PIPELINES = PROJECT_ROOT / "config" / "pipelines"
LOCAL = PROJECT_ROOT / "config" / "routing.local.yaml"


@pytest.fixture(scope="module")
def routing():
    return load_routing_config(LOCAL)


def resolve(text: str, routing, source="team.yaml"):
    return resolve_pipeline(parse_pipeline_spec(text, source), source, routing, "routing.local.yaml")


def test_shipped_pipelines_load_with_their_stages_in_order(routing):
    pipelines = load_pipelines(PIPELINES, routing, str(LOCAL))
    assert set(pipelines) == {"campaign", "stills", "audio"}
    campaign = pipelines["campaign"]
    assert campaign.stage_names == ("concept", "approve_concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video")
    # The approval stage holds every stage that reads the concept (docs/stages.md, Approval gates).
    assert [s.name for s in campaign.gates] == ["approve_concept"] and campaign.gate_subject("approve_concept") == "concept"
    assert dict(campaign.stage("voiceover").inputs) == {"concept": "concept", "approve_concept": "approve_concept"}
    assert campaign.gates_of("draft_image") == ("approve_concept",) and campaign.gates_of("captions") == ()
    assert campaign.key_prefix == () and campaign.partitions_name == "variants"
    assert dict(campaign.stage("synced_video").inputs) == {"image": "refined_image", "voiceover": "voiceover", "captions": "captions"}
    assert pipelines["stills"].stage_names == ("concept", "draft_image", "refined_image")
    assert pipelines["audio"].stage_names == ("concept", "voiceover", "captions")
    assert pipelines["stills"].key("concept").path == ["stills", "concept"]
    # Thresholds come from the stage's settings, so the check's text and its verdict agree.
    refined = [c for c in campaign.checks() if c.stage == "refined_image"][0]
    assert "short side >= 1080 px" in refined.description()


def test_published_json_schema_is_current():
    published = json.loads((PIPELINES / SCHEMA_FILE).read_text())
    assert published == json.loads(json.dumps(pipeline_json_schema(), sort_keys=True))
    for path in PIPELINES.glob("*.yaml"):
        assert path.read_text().startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}")


STILLS = """
name: team
description: d
stages:
  - {name: concept, kind: concept}
  - {name: draft_image, kind: image}
  - {name: refined_image, kind: refine, inputs: {image: draft_image}}
"""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("kind: image", "kind: imagen"),
            "team.yaml: stages[1] (draft_image).kind: unknown stage kind 'imagen'; known kinds: approval, captions, concept",
        ),
        (
            lambda t: t.replace("{image: draft_image}", "{}"),
            "stages[2] (refined_image).inputs.image: no stage 'image' produces it (the 'refine' kind reads a ImageArtifact); bind it",
        ),
        (
            lambda t: t.replace("{image: draft_image}", "{image: concept}"),
            "stages[2] (refined_image).inputs.image: stage 'concept' makes a ConceptDoc, the 'refine' kind reads a ImageArtifact",
        ),
        (
            lambda t: t.replace("{image: draft_image}", "{image: draft_image, mask: concept}"),
            "stages[2] (refined_image).inputs.mask: the 'refine' kind has no input 'mask'",
        ),
        (
            lambda t: t.replace("kind: image}", "kind: image, settings: {short_side: big}}"),
            "stages[1] (draft_image).settings.short_side: Input should be a valid integer",
        ),
        (
            lambda t: t.replace("kind: image}", "kind: image, settings: {shortside: 5}}"),
            "stages[1] (draft_image).settings.shortside: the 'image' kind has no setting 'shortside'; its settings: short_side",
        ),
        (lambda t: t.replace("kind: image}", "kind: image, task: picture}"), "stages[1] (draft_image).task: unknown task 'picture'"),
        (
            lambda t: t.replace("kind: image}", "kind: image, task: voice}"),
            "stages[1] (draft_image).task: task 'voice' takes a VoiceRequest; the 'image' kind makes a ImageRequest",
        ),
        (
            lambda t: t.replace("kind: image}", "kind: image, checks: [png_valid, sharp]}"),
            "stages[1] (draft_image).checks[1]: the 'image' kind has no check 'sharp'; it offers: png_valid",
        ),
        (lambda t: t.replace("name: concept,", "name: brief,"), "stages[0].name: 'brief' is reserved"),
        (lambda t: t.replace("name: draft_image,", "name: concept,"), "stages[1].name: 'concept' is used by stages[0] too"),
        (
            lambda t: t + "  - {name: tidy, kind: captions, task: voice}\n",
            "stages[3] (tidy).task: the 'captions' kind calls no model, so it takes no task",
        ),
        (
            lambda t: t + "jobs:\n  - {name: again, from_stages: [draft], description: x}\n",
            "jobs[0] (again).from_stages[0]: no stage 'draft'",
        ),
        (lambda t: t.replace("stages:", "stage:"), "team.yaml: stages: Field required; stage: Extra inputs are not permitted"),
    ],
)
def test_bad_pipeline_files_name_the_file_stage_and_field(routing, edit, message):
    with pytest.raises(PipelineError) as raised:
        resolve(edit(STILLS), routing)
    assert message in str(raised.value)


def test_which_checks_judge_a_providers_answer_is_declared_with_the_stage(routing):
    judging = {(c.stage, c.name): c.judges_answer for c in resolve(STILLS, routing).checks()}
    assert judging == {
        ("concept", "no_banned_terms"): True,
        ("concept", "on_brief"): True,
        ("draft_image", "png_valid"): True,
        ("refined_image", "png_valid"): True,
    }
    text = STILLS.replace("kind: concept}", "kind: concept, checks: [no_banned_terms, {name: on_brief, judges_answer: false}]}")
    judging = {(c.stage, c.name): c.judges_answer for c in resolve(text, routing).checks()}
    assert judging[("concept", "on_brief")] is False and judging[("concept", "no_banned_terms")] is True
    # A stage that calls no model has no provider to send an answer back to.
    campaign = load_pipelines(PIPELINES, routing, str(LOCAL))["campaign"]
    assert {c.name: c.judges_answer for c in campaign.checks() if c.stage == "captions"} == {
        "caption_rules": False,
        "no_banned_terms": False,
    }


def test_a_cycle_is_named(routing):
    text = """
name: loop
description: d
stages:
  - {name: concept, kind: concept}
  - {name: one, kind: refine, inputs: {image: two}}
  - {name: two, kind: refine, inputs: {image: one}}
"""
    with pytest.raises(PipelineError, match=r"stages: a cycle: (one -> two -> one|two -> one -> two)"):
        resolve(text, routing)


def test_stages_may_be_listed_in_any_order_and_run_in_dependency_order(routing):
    text = """
name: backwards
description: d
stages:
  - {name: refined_image, kind: refine, inputs: {image: draft_image}}
  - {name: draft_image, kind: image}
  - {name: concept, kind: concept}
"""
    assert resolve(text, routing).stage_names == ("concept", "draft_image", "refined_image")


def test_routing_needs_routes_only_for_the_tasks_pipelines_use(tmp_path):
    local = yaml.safe_load(LOCAL.read_text())
    del local["tasks"]["video"]
    del local["providers"]["local-video"]
    no_video = parse_routing_config(yaml.safe_dump(local), "no-video.yaml")  # valid on its own
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name in ("stills", "audio"):
        shutil.copy(PIPELINES / f"{name}.yaml", folder)
    assert set(load_pipelines(folder, no_video, "no-video.yaml")) == {"stills", "audio"}
    shutil.copy(PIPELINES / "campaign.yaml", folder)
    with pytest.raises(
        PipelineError, match=r"campaign.yaml: stages\[6\] \(synced_video\).task: task 'video' has no route in no-video.yaml"
    ):
        load_pipelines(folder, no_video, "no-video.yaml")


def test_two_files_cannot_claim_the_same_name_prefix_or_job(tmp_path, routing):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    shutil.copy(PIPELINES / "stills.yaml", folder / "a.yaml")
    shutil.copy(PIPELINES / "stills.yaml", folder / "b.yaml")
    with pytest.raises(PipelineError, match=r"b.yaml: name: 'stills' is already used by .*a.yaml"):
        load_pipelines(folder, routing, "routing")
    (folder / "b.yaml").write_text((PIPELINES / "stills.yaml").read_text().replace("name: stills", "name: posters"))
    with pytest.raises(PipelineError, match=r"b.yaml: job: 'regenerate_stills' is already used"):
        load_pipelines(folder, routing, "routing")


def test_a_bad_pipeline_file_fails_the_definitions_load(tmp_path, monkeypatch, studio_home):
    from orchestration.definitions import build_definitions

    folder = tmp_path / "pipelines"
    shutil.copytree(PIPELINES, folder)
    (folder / "stills.yaml").write_text((PIPELINES / "stills.yaml").read_text().replace("kind: refine", "kind: refiner"))
    monkeypatch.setenv("STUDIO_PIPELINES_DIR", str(folder))
    with pytest.raises(Exception) as raised:
        build_definitions()
    text = "".join(str(e) for e in _chain(raised.value))
    assert "stills.yaml: stages[2] (refined_image).kind: unknown stage kind 'refiner'" in text


def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_unknown_task_in_routing_and_wrong_price_unit_are_routing_errors():
    local = yaml.safe_load(LOCAL.read_text())
    local["tasks"]["dance"] = {"route": ["local-voice"]}
    with pytest.raises(ValueError, match="tasks.dance: unknown task; known tasks: concept, image, music, refine, video, voice"):
        parse_routing_config(yaml.safe_dump(local), "r.yaml")
    local = yaml.safe_load(LOCAL.read_text())
    local["providers"]["local-voice"]["price"] = {"per_image": 0.01}
    with pytest.raises(
        ValueError, match=r"providers.local-voice.price: per_image is not how the 'voice' task is priced; use per_1k_characters"
    ):
        parse_routing_config(yaml.safe_dump(local), "r.yaml")


def test_task_and_adapter_registries_are_complete():
    from model_adapters.registry import validate_adapter_kinds
    from model_adapters.tasks import TASK_SPECS, TaskSpec, validate_task_specs

    validate_task_specs()
    validate_adapter_kinds()
    broken = dict(TASK_SPECS)
    spec = broken["voice"]
    broken["voice"] = TaskSpec(**{**spec.__dict__, "blobs": {}})
    with pytest.raises(ValueError, match=r"task spec 'voice': blobs \[\] must name exactly the bytes fields of VoiceResult \(\['wav'\]\)"):
        validate_task_specs(broken)
    broken["voice"] = TaskSpec(**{**spec.__dict__, "price_units": frozenset({"per_minute"})})
    with pytest.raises(ValueError, match="task spec 'voice': price_units"):
        validate_task_specs(broken)


def test_stage_kinds_are_found_in_their_package():
    from assets.stage_kinds import stage_kind, stage_kinds

    assert set(stage_kinds()) == {"concept", "approval", "image", "refine", "voiceover", "captions", "video", "music_bed"}
    assert stage_kind("video").accelerator and not stage_kind("captions").accelerator
    with pytest.raises(KeyError, match="unknown stage kind 'x'"):
        stage_kind("x")
    assert Path(stage_kind("concept").work.__code__.co_filename).parent.name == "stage_kinds"


def test_an_incomplete_stage_kind_fails_naming_it():
    import dataclasses

    from assets.stage_kinds import stage_kind, validate_stage_kind
    from model_adapters.tasks import TASK_SPECS

    voiceover = stage_kind("voiceover")
    with pytest.raises(TypeError, match=r"stage kind 'voiceover' \(x\): output must be a manifest model"):
        validate_stage_kind(dataclasses.replace(voiceover, output=dict), "x")
    stray = dataclasses.replace(TASK_SPECS["voice"], name="voice2")
    with pytest.raises(ValueError, match="task 'voice2' is not a registered task spec"):
        validate_stage_kind(dataclasses.replace(voiceover, task=stray), "x")
    with pytest.raises(ValueError, match="check names repeat"):
        validate_stage_kind(dataclasses.replace(voiceover, checks=voiceover.checks * 2), "x")
