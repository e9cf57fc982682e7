"""Every Dagster private or preview API the project uses, in one place.

Written for Dagster `WRITTEN_FOR` (tests/test_dagster_api.py pins it): when
Dagster is upgraded, this module and that test are where to look.

- Private: the partition-range run tags (`dagster._core.storage.tags`), the
  target-materialization record of a check evaluation, the step's metadata
  accumulator (many partitions' metadata at once), and the SQLite event-log
  storage the local instance subclasses (orchestration/sqlite_event_log.py).
- Preview in 1.13: asset checks on partitioned assets (`partitions_def=` on
  `AssetCheckSpec` and `@asset_check`), and `AssetCheckEvaluation(partition=)`.
- Beta: the `backfill_policy=` parameter of assets (`BackfillPolicy.multi_run`).

Dagster's preview and beta warnings about these are silenced here and nowhere else:
while they are built (`_quietly`), and where Dagster's own code repeats them
(`KNOWN_PREVIEW_WARNINGS`, by message).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._config import StringSource  # noqa: F401  (re-exported for the event-log storage)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage  # noqa: F401
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS  # noqa: F401
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._serdes import ConfigurableClassData  # noqa: F401

WRITTEN_FOR = "1.13.27"

PARTITION_RANGE_START_TAG = ASSET_PARTITION_RANGE_START_TAG
PARTITION_RANGE_END_TAG = ASSET_PARTITION_RANGE_END_TAG


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """The run tags of a run over the partition range first..last (a single-run backfill)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _quietly(make: Callable[[], Any]) -> Any:
    """Build a definition that Dagster flags as preview/beta without the warning: we know."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        warnings.simplefilter("ignore", dg.BetaWarning)
        return make()


# What Dagster says about the preview/beta APIs above from its own code, where `_quietly`
# cannot reach: `@dg.asset` warns about the `backfill_policy=` it is given (the brief asset),
# `AssetCheckSpec` re-creates itself with our `partitions_def=` when Dagster re-keys a check,
# and the repository re-wraps every `@asset_check` definition passing `execution_type=` to
# `AssetsDefinition.__init__` when it builds the asset graph (the demo, the CLI, tests).
# Matched by message, so any other preview or beta API still warns. Registered when this
# module is imported: a filter added while the definitions load would be dropped when
# Dagster's loader restores the warning filters it found.
KNOWN_PREVIEW_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset` is currently in beta"),
    (dg.PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"),
    (dg.BetaWarning, r"Parameter `execution_type` of function `AssetsDefinition.__init__` is currently in beta"),
)
for _category, _message in KNOWN_PREVIEW_WARNINGS:
    warnings.filterwarnings("ignore", message=_message, category=_category)


def chunked_backfill_policy(max_partitions_per_run: int) -> dg.BackfillPolicy:
    """A backfill of many variants as runs of at most `max_partitions_per_run` partitions each."""
    return _quietly(lambda: dg.BackfillPolicy.multi_run(max_partitions_per_run))


def partitioned_check_spec(
    name: str, asset_key: dg.AssetKey, *, blocking: bool, description: str, partitions_def: dg.PartitionsDefinition
) -> dg.AssetCheckSpec:
    return _quietly(
        lambda: dg.AssetCheckSpec(name, asset=asset_key, blocking=blocking, description=description, partitions_def=partitions_def)
    )


def partitioned_asset_check(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """`@dg.asset_check(partitions_def=..., ...)`."""

    def decorate(fn: Callable[..., Any]) -> dg.AssetChecksDefinition:
        return _quietly(lambda: dg.asset_check(**kwargs)(fn))

    return decorate


def partition_check_evaluation(**kwargs: Any) -> dg.AssetCheckEvaluation:
    """An `AssetCheckEvaluation` for one partition (`partition=`, `target_materialization_data=`)."""
    return _quietly(lambda: dg.AssetCheckEvaluation(**kwargs))


def latest_materialization_records(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Sequence[str]) -> dict[str, Any]:
    """partition key -> its latest materialization's event record, for the keys that have one
    (pages of records, newest first, until every key is found or none are left)."""
    wanted, found = set(partition_keys), {}
    cursor = None
    while wanted - set(found):
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=sorted(wanted - set(found))),
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


def latest_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Sequence[str]) -> dict[str, Any]:
    """partition key -> the target data of its latest materialization, so the UI can tell
    whether a check result is current (the type `AssetCheckResult` itself fills in)."""
    return {
        key: AssetCheckEvaluationTargetMaterializationData(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
        for key, record in latest_materialization_records(instance, asset_key, partition_keys).items()
    }


def add_partition_metadata(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, by_partition: Mapping[str, Mapping[str, Any]]
) -> None:
    """`context.add_asset_metadata` for many partitions of the step at once.

    Dagster 1.13's `add_asset_metadata(partition_key=...)` re-reads the dynamic
    partitions from the instance on every call to check the key (~17 ms each on
    this machine: 6 s for the 384 calls of a 64-variant run). The keys here are
    the step's own, checked once against `context.partition_keys`; the
    metadata goes to the same accumulator the public method fills.
    """
    targeted = set(context.partition_keys)
    unknown = set(by_partition) - targeted
    if unknown:
        raise dg.DagsterInvariantViolationError(f"metadata for partitions this step does not target: {sorted(unknown)}")
    step = context.get_step_execution_context()
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):  # another Dagster: the public way
        for key, metadata in by_partition.items():
            context.add_asset_metadata(dict(metadata), asset_key=asset_key, partition_key=key)
        return
    for key, metadata in by_partition.items():
        accumulator = accumulator.with_additional_asset_metadata(asset_key=asset_key, metadata=dict(metadata), partition_key=key)
    step._metadata_accumulator = accumulator  # noqa: SLF001


def check_verdicts_by_target(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partition_key: str, limit: int = 500
) -> dict[int, bool]:
    """Storage id of the materialization each evaluation judged -> passed, for one check of one
    partition (the newest evaluation of a materialization wins): `studio history`'s verdicts.
    Private: the event log's check-execution history and its partition filter."""
    from dagster._core.event_api import PartitionKeyFilter

    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key, limit=limit, partition_filter=PartitionKeyFilter(key=partition_key)
    )
    found: dict[int, bool] = {}
    for record in records:  # newest first
        event = record.event.dagster_event if record.event is not None else None
        evaluation = event.event_specific_data if event is not None else None
        target = getattr(evaluation, "target_materialization_data", None)
        if isinstance(evaluation, dg.AssetCheckEvaluation) and target is not None:
            found.setdefault(target.storage_id, evaluation.passed)
    return found
