from datetime import UTC, datetime

import dagster as dg

from orchestration.schedules import nightly_repair as repair_schedule
from orchestration.schedules import variants_needing_repair
from tests.helpers import request_keys, shipped_pipelines

NIGHT = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def test_repair_requests_only_variants_without_a_video():
    campaign = shipped_pipelines()["campaign"]
    nightly_repair = repair_schedule(campaign)
    assert nightly_repair.name == "nightly_repair" and nightly_repair.job_name == "produce_campaign"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("variants", ["c.a", "c.b", "c.c"])
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="synced_video", partition="c.b"))
        assert variants_needing_repair(instance, campaign) == ["c.a", "c.c"]
        requests = nightly_repair(dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHT))
        assert [r.partition_key for r in requests] == ["c.a", "c.c"]
        assert all(r.tags["repair"] == "nightly" for r in requests)
        assert requests[0].run_key == "repair:2026-11-24:c.a"
        for key in ("c.a", "c.c"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="synced_video", partition=key))
        skip = nightly_repair(dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHT))
        assert isinstance(skip, dg.SkipReason)


def test_each_pipeline_repairs_its_own_final_stage():
    stills = shipped_pipelines()["stills"]
    assert repair_schedule(stills).name == "stills__nightly_repair"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("stills_variants", ["s.a", "s.b"])
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["stills", "refined_image"], partition="s.a"))
        assert variants_needing_repair(instance, stills) == ["s.b"]


def test_repair_runs_in_chunks_of_max_variants_per_run():
    campaign = shipped_pipelines()["campaign"]
    with dg.instance_for_test() as instance:
        keys = [f"big.v{i:02d}" for i in range(20)] + ["small.a", "small.b"]
        instance.add_dynamic_partitions("variants", keys)
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="synced_video", partition="big.v05"))
        requests = repair_schedule(campaign)(dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHT))
        spans = [request_keys(instance, r) for r in requests]
        # big.v00..v04 (v05 is done), then v06..v19 and small's two: 16 neighbours, one run.
        assert spans == [keys[:5], keys[6:22]]
        assert [r.tags["campaign"] for r in requests] == ["big", "big,small"]
        assert requests[0].run_key == "repair:2026-11-24:big.v00..big.v04"
