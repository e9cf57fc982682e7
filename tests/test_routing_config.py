from __future__ import annotations

import pytest

from orchestration.definitions import build_definitions
from resources.routing_config import RoutingConfigError, load_routing_config, parse_routing_config
from tests.conftest import PROJECT_ROOT

LOCAL = (PROJECT_ROOT / "config" / "routing.local.yaml").read_text()


def test_local_config_routes_every_task():
    routing = load_routing_config(PROJECT_ROOT / "config" / "routing.local.yaml")
    assert routing.route("image") == ("local-image",)
    assert len({routing.task_identity(t) for t in ("concept", "image", "refine", "voice", "video")}) == 5


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("adapter: local-procedural-image", "adapter: dall-e-99", "providers.local-image.adapter: unknown adapter 'dall-e-99'"),
        ("max_concurrency: 2\n  local-refiner", "max_concurency: 2\n  local-refiner", "providers.local-image.max_concurency: Extra inputs"),
        ("image: {route: [local-image]}", "image: {route: [nowhere]}", "tasks.image.route[0]: unknown provider 'nowhere'"),
        ("image: {route: [local-image]}", "image: {route: [local-voice]}", "does the 'voice' task, not 'image'"),
        ("  video: {route: [local-video]}\n", "  video: {route: [local-video]}\n  dance: {route: [local-video]}\n", "tasks.dance"),
    ],
)
def test_bad_config_names_the_field(old, new, expected):
    assert old in LOCAL
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_config(LOCAL.replace(old, new), "config/x.yaml")
    assert str(caught.value).startswith("config/x.yaml: ")
    assert expected in str(caught.value)


def test_definitions_load_fails_on_a_bad_config(tmp_path):
    bad = tmp_path / "routing.yaml"
    bad.write_text(LOCAL.replace("adapter: local-pyav", "adapter: sora-x"))
    with pytest.raises(RoutingConfigError, match=r"routing.yaml: providers.local-video.adapter: unknown adapter 'sora-x'"):
        build_definitions(bad)


def test_a_route_only_the_pipelines_need_and_a_missing_one_named_by_the_pipeline(tmp_path):
    # A routing config on its own needs no route for a task; the pipeline that uses one does.
    without_video = LOCAL.replace("  video: {route: [local-video]}\n", "")
    assert "video" not in parse_routing_config(without_video, "config/x.yaml").tasks
    path = tmp_path / "routing.yaml"
    path.write_text(without_video)
    with pytest.raises(Exception) as caught:
        build_definitions(path)
    text = " ".join(str(e) for e in (caught.value, caught.value.__cause__) if e)
    assert "campaign.yaml: stages[6] (synced_video).task: task 'video' has no route in" in text and "routing.yaml" in text


def test_route_change_changes_only_that_assets_code_version(tmp_path):
    changed = tmp_path / "routing.yaml"
    changed.write_text(
        LOCAL.replace(
            "local-image:\n    adapter: local-procedural-image", "local-image:\n    adapter: local-procedural-image\n    model: v2-prompts"
        )
    )
    before = {s.key.to_user_string(): s.code_version for s in build_definitions().resolve_all_asset_specs()}
    after = {s.key.to_user_string(): s.code_version for s in build_definitions(changed).resolve_all_asset_specs()}
    # The image task's stages, in every pipeline that has one; nothing else.
    assert {k for k in before if before[k] != after[k]} == {"draft_image", "stills/draft_image"}


def test_providers_are_resources_with_their_settings():
    definitions = build_definitions()
    resources = definitions.resources
    assert {"router", "artifacts", "briefs", "manifest_io_manager"} <= set(resources)
    provider = resources["provider_local_image"]
    assert provider.adapter == "local-procedural-image" and provider.max_concurrency == 2
    assert resources["router"].routes["video"] == ["local-video"]
