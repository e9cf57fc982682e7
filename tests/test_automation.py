"""Declarative automation evaluated in-process: downstream follows upstream once, a model change
regenerates its stage and what follows it, and nothing else runs."""

import shutil

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from tests.conftest import PROJECT_ROOT
from tests.helpers import register, run_campaign

pytestmark = pytest.mark.e2e


def requested(result, definitions) -> dict[str, set]:
    keys = definitions.resolve_asset_graph().get_all_asset_keys()
    return {k.to_user_string(): set(result.get_requested_partitions(k)) for k in keys if result.get_requested_partitions(k)}


def test_automation_follows_changes_and_nothing_else(sample_campaign, studio_home, one_campaign, tmp_path):
    # The session's sample campaign's studio (its cached model answers) under a new Dagster home:
    # the run below is recorded in full, made from cached answers in seconds instead of by the
    # models again. What is tested is what automation asks for around it.
    shutil.copytree(sample_campaign.home, studio_home, dirs_exist_ok=True)
    definitions = build_definitions()
    with dg.instance_for_test() as instance:
        keys = register(instance)
        # Registered but not produced: the sensor's runs produce them, automation waits for `brief`.
        first = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
        assert first.total_requested == 0
        assert run_campaign(instance, keys, definitions=definitions).success
        settled = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=first.cursor)
        assert settled.total_requested == 0  # the run handled everything: nothing runs twice

        # One variant's brief is re-materialized (the sensor saw it change): only that variant follows.
        changed = keys[1]
        job = definitions.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("brief")], partition_key=changed).success
        after_brief = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=settled.cursor)
        followed = requested(after_brief, definitions)
        assert {asset for asset in followed if asset != "campaign_rollup"} == {
            "concept",
            "approve_concept",
            "draft_image",
            "refined_image",
            "voiceover",
            "captions",
            "synced_video",
        }
        assert all(partitions == {changed} for asset, partitions in followed.items() if asset != "campaign_rollup")

        # The image model changes: draft_image is regenerated, then refined_image and the video; not voice or concept.
        routing = (PROJECT_ROOT / "config" / "routing.local.yaml").read_text()
        new_model = tmp_path / "routing.yaml"
        new_model.write_text(routing.replace("adapter: local-procedural-image", "adapter: local-procedural-image\n    model: v2"))
        rerouted = build_definitions(new_model)
        after_route = dg.evaluate_automation_conditions(defs=rerouted, instance=instance, cursor=after_brief.cursor)
        regenerated = requested(after_route, rerouted)
        assert set(regenerated) == {"draft_image", "refined_image", "synced_video"}
        # (the changed variant was already requested above, so it is not requested again)
        assert regenerated["draft_image"] == set(keys) - {changed}
