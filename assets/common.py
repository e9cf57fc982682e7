"""What every variant asset shares: partitions, single-run backfills, the manifest IO manager."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from assets.partitions import variant_partitions

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
        "partitions_def": variant_partitions,
        # Many variants in one run; the step handles `context.partition_keys` concurrently.
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "io_manager_key": MANIFEST_IO_MANAGER_KEY,
        "group_name": group,
        "kinds": kinds,
        "description": description,
        "code_version": code_version,
        "owners": STUDIO_OWNERS,
    }


def latest_materialization_records(instance: dg.DagsterInstance, asset: str, partition_keys: Sequence[str]) -> dict[str, Any]:
    """partition key -> its latest materialization's event record, for the keys that have one
    (pages of records, newest first, until every key is found or none are left)."""
    wanted, found = set(partition_keys), {}
    cursor = None
    while wanted - set(found):
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=sorted(wanted - set(found))),
            limit=max(100, 2 * len(wanted)),
            cursor=cursor,
        )
        for record in result.records:
            if record.partition_key in wanted and record.partition_key not in found:
                found[record.partition_key] = record
        if not result.has_more:
            break
        cursor = result.cursor
    return found
