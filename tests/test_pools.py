import dagster as dg
import yaml

from orchestration.definitions import build_definitions
from tests.conftest import PROJECT_ROOT


def test_the_model_step_declares_the_torch_pool_and_light_steps_do_not():
    pools = {}
    for assets_def in build_definitions().resolve_asset_graph().assets_defs:
        for key in assets_def.keys:
            pools[key.to_user_string()] = assets_def.node_def.pools
    stages = ("concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video")
    assert all(pools[stage] == {"torch"} for stage in stages), pools
    assert not pools["brief"] and not pools["campaign_rollup"]


def test_local_instance_config_limits_each_pool_to_one_step(tmp_path):
    config = yaml.safe_load((PROJECT_ROOT / "config" / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=config) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 2
