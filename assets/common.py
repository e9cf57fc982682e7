"""What every variant asset shares: partitions, single-run backfills, the manifest IO manager."""

from typing import Any

import dagster as dg

from assets.partitions import variant_partitions

MANIFEST_IO_MANAGER_KEY = "manifest_io_manager"


def variant_asset_kwargs(*, group: str, kinds: set[str], description: str, code_version: str) -> dict[str, Any]:
    return {
        "partitions_def": variant_partitions,
        # Many variants in one run; the step handles `context.partition_keys` concurrently.
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "io_manager_key": MANIFEST_IO_MANAGER_KEY,
        "group_name": group,
        "kinds": kinds,
        "description": description,
        "code_version": code_version,
        "owners": ["team:creative-ops"],
    }
