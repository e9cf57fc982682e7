"""Unchanged stages are not made or checked again (assets/reuse.py), on the embedded
default: a re-run of an unchanged campaign (recorded as `reused`, so the run and its
backfill end green), a changed setting, a lost file, `force`, and a new Dagster home
over the same studio."""

import copy
import os

import dagster as dg
import pytest

from assets.reuse import content_digest
from resources.io_manager import JsonManifestIOManager
from tests.helpers import CAMPAIGN_STAGES, FAST_VIDEO, assert_campaign_media, register, run_campaign, sample_campaign_view

pytestmark = pytest.mark.e2e

STAGES = CAMPAIGN_STAGES


def _materializations(instance) -> dict[str, int]:
    return {stage: len(instance.fetch_materializations(dg.AssetKey(stage), limit=1000).records) for stage in STAGES}


def _made(instance) -> dict[str, int]:
    """Materializations of outputs really made (not those marked `reused`)."""
    return {
        stage: sum(
            not r.asset_materialization.metadata["reused"].value
            for r in instance.fetch_materializations(dg.AssetKey(stage), limit=1000).records
        )
        for stage in STAGES
    }


def _evaluations(instance, run_id: str) -> list:
    return [e.dagster_event.event_specific_data for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def _manifests(keys) -> dict[tuple[str, str], str]:
    load = JsonManifestIOManager().load_manifest
    return {(stage, key): load(dg.AssetKey(stage), key).model_dump_json() for stage in STAGES for key in keys}


def _video_config(fps: int, force: bool = False) -> dict:
    config = copy.deepcopy(FAST_VIDEO)
    config["ops"]["variant_media"]["config"]["synced_video"]["fps"] = fps
    config["ops"]["variant_media"]["config"]["force"] = force
    return config


def test_an_unchanged_rerun_makes_nothing_and_a_change_remakes_only_what_it_touches(studio_home, one_campaign):
    load = JsonManifestIOManager().load_manifest
    with dg.instance_for_test() as instance:
        keys = register(instance)
        first = run_campaign(instance, keys)
        assert first.success
        counts, manifests = _materializations(instance), _manifests(keys)
        assert counts == {stage: len(keys) for stage in STAGES}
        for stage in STAGES:
            manifest = load(dg.AssetKey(stage), keys[0])
            assert manifest.input_fingerprint and len(manifest.input_fingerprint) == 64
        assert set(load(dg.AssetKey("voiceover"), keys[0]).checks_passed) == {
            "loudness_within_spec",
            "fits_duration",
            "speech_intelligible",
        }

        # 1. The same run again: no stage made or checked; each is recorded as `reused`, with the
        # metadata of the materialization it repeats, so the partition shows as materialized by this run.
        again = run_campaign(instance, keys)
        assert again.success
        assert _made(instance) == counts
        assert _materializations(instance) == {stage: 2 * n for stage, n in counts.items()}
        for stage in STAGES:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey(stage), asset_partitions=[keys[0]]), limit=2
            ).records
            first_record, repeat = sorted(records, key=lambda r: r.storage_id)
            assert repeat.run_id == again.run_id and repeat.asset_materialization.metadata["reused"].value is True
            assert (
                repeat.asset_materialization.metadata["input_fingerprint"]
                == first_record.asset_materialization.metadata["input_fingerprint"]
            )
        assert _manifests(keys) == manifests
        # The media checks are not evaluated again: their last evaluations judged the same
        # manifests (the budget check, its own step, runs as always).
        assert {e.check_name for e in _evaluations(instance, again.run_id)} == {"campaign_within_budget"}
        messages = [entry.message for entry in instance.all_logs(again.run_id) if entry.dagster_event is None]
        assert any("unchanged, not made again: " + ", ".join(STAGES) in m for m in messages), messages

        # 2. A video setting changes: only the video is made again, for every variant.
        counts = _made(instance)
        changed = run_campaign(instance, keys, run_config=_video_config(fps=25))
        assert changed.success
        after = _made(instance)
        assert after == {**counts, "synced_video": 2 * len(keys)}
        for key in keys:
            assert load(dg.AssetKey("synced_video"), key).fps == 25
        checked = {(e.asset_key.path[-1], e.partition) for e in _evaluations(instance, changed.run_id) if "unchanged" not in e.metadata}
        assert checked and {asset for asset, _ in checked} == {"synced_video"}
        assert_campaign_media(keys, load, fps=25)

        # 3. A refined image's file is lost: that variant's image is made again (the same
        # bytes, from the seeded model) and checked; the others are recorded as reused, their
        # checks' last verdicts standing, and the video, whose inputs did not change, is reused.
        lost = load(dg.AssetKey("refined_image"), keys[1]).artifact
        path = lost.uri.removeprefix("file://")
        os.remove(path)
        before = _made(instance)
        remade = run_campaign(instance, keys, run_config=_video_config(fps=25))
        assert remade.success
        assert os.path.exists(path)
        assert _made(instance) == {**before, "refined_image": before["refined_image"] + 1}
        evaluations = [e for e in _evaluations(instance, remade.run_id) if e.asset_key.path[-1] == "refined_image"]
        assert evaluations and all(e.passed for e in evaluations)
        assert {e.partition for e in evaluations} == {keys[1]}  # the remade one is checked; the others' verdicts stand
        refreshed = instance.fetch_materializations(dg.AssetKey("refined_image"), limit=len(keys)).records
        assert {r.partition_key for r in refreshed} == set(keys)
        assert all(
            r.asset_materialization.metadata["input_fingerprint"].value
            == load(dg.AssetKey("refined_image"), r.partition_key).input_fingerprint
            for r in refreshed
        )

        # 4. `force`: everything is made and recorded again (from the response cache).
        before = _made(instance)
        forced = run_campaign(instance, keys, run_config=_video_config(fps=25, force=True))
        assert forced.success
        assert _made(instance) == {stage: n + len(keys) for stage, n in before.items()}
        for stage in ("concept", "draft_image", "refined_image", "voiceover", "synced_video"):
            assert all(load(dg.AssetKey(stage), key).provenance.cache_hit for key in keys), stage

    # 5. A new Dagster home over the same studio: nothing is recorded there, so every stage
    # is made and recorded (cache hits), not silently taken as done.
    with dg.instance_for_test() as fresh:
        keys = register(fresh)
        assert run_campaign(fresh, keys, run_config=_video_config(fps=25)).success
        assert _made(fresh) == {stage: len(keys) for stage in STAGES}


def test_the_fingerprint_follows_content_not_how_it_was_made(sample_campaign, tmp_path):
    with sample_campaign_view(sample_campaign, tmp_path) as campaign:
        refined = campaign.load(dg.AssetKey("refined_image"), campaign.keys[0])
    as_cache_hit = refined.model_copy(update={"provenance": refined.provenance.model_copy(update={"cache_hit": True, "latency_s": 0.0})})
    assert content_digest(as_cache_hit) == content_digest(refined)
    other_file = refined.model_copy(update={"artifact": refined.artifact.model_copy(update={"sha256": "0" * 64})})
    assert content_digest(other_file) != content_digest(refined)
