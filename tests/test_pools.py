import dagster as dg
import yaml

from orchestration.definitions import build_definitions
from tests.conftest import PROJECT_ROOT


def test_heavy_stages_declare_pools_and_light_ones_do_not():
    pools = {}
    for assets_def in build_definitions().resolve_asset_graph().assets_defs:
        for key in assets_def.keys:
            pools[key.to_user_string()] = assets_def.node_def.pools
    assert pools["draft_image"] == pools["refined_image"] == pools["synced_video"] == {"torch"}
    assert pools["voiceover"] == {"espeak"}
    assert not pools["brief"] and not pools["concept"] and not pools["captions"]


def test_local_instance_config_limits_each_pool_to_one_step(tmp_path):
    config = yaml.safe_load((PROJECT_ROOT / "config" / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=config) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 2
