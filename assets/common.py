"""What every variant asset shares: partitions, chunked backfills, the manifest IO manager."""

from typing import Any

import dagster as dg

from assets.dagster_api import chunked_backfill_policy
from assets.stages import Pipeline

MANIFEST_IO_MANAGER_KEY = "manifest_io_manager"


# The concurrency pool of the model step (limit in the instance's dagster.yaml):
# its torch and PyAV work uses every core, so locally one such step runs at a time.
TORCH_POOL = "torch"
STUDIO_OWNERS = ["team:creative-ops"]

# Downstream stages follow their inputs (eager: once per upstream change, never
# while the partition is in progress or an input is missing), and a stage
# whose code version changed (its model route, see assets/__init__.py) is
# regenerated, then what follows it. `brief` has no condition: the brief
# sensor requests it, so a new variant is never requested twice.
FOLLOW_UPSTREAM = dg.AutomationCondition.eager() | (
    dg.AutomationCondition.code_version_changed().since_last_handled()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_missing()
)


def variant_asset_kwargs(
    pipeline: Pipeline,
    *,
    group: str,
    kinds: set[str],
    description: str,
    code_version: str,
    pool: str | None = None,
    automation: dg.AutomationCondition | None = FOLLOW_UPSTREAM,
) -> dict[str, Any]:
    return {
        "pool": pool,
        "automation_condition": automation,
        "partitions_def": pipeline.partitions_def,
        # Many variants in one run (the step handles `context.partition_keys` concurrently), at
        # most the pipeline's max_variants_per_run: a big backfill spreads over run workers.
        "backfill_policy": chunked_backfill_policy(pipeline.max_variants_per_run),
        "io_manager_key": MANIFEST_IO_MANAGER_KEY,
        "group_name": group,
        "kinds": kinds,
        "description": description,
        "code_version": code_version,
        "owners": STUDIO_OWNERS,
    }
