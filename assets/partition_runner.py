"""Run a step's work for every partition key of the step, concurrently (the `brief` asset).

A single-run backfill hands one step many partition keys; a UI
materialization of one partition hands it one. Both go through here: the
per-variant coroutines run together on one event loop. A variant that fails
does not cancel the others, and the step then fails naming every failed
partition and why.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

M = TypeVar("M")

StageWork = Callable[[str], Awaitable[tuple[M, Mapping[str, Any]]]]


def run_partitions(context: dg.AssetExecutionContext, work: StageWork[M]) -> dict[str, M]:
    """Run `work(partition_key)` for every key of the step; returns {key: manifest}."""
    keys = list(context.partition_keys)

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(work(key) for key in keys), return_exceptions=True)

    return _collect(context, keys, asyncio.run(run_all()))


def _collect(context: dg.AssetExecutionContext, keys: list[str], outcomes: list[Any]) -> dict[str, M]:
    manifests: dict[str, M] = {}
    failures: dict[str, BaseException] = {}
    for key, outcome in zip(keys, outcomes, strict=False):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome  # KeyboardInterrupt, SystemExit, cancellation: not a variant's fault
            failures[key] = outcome
            context.log.error(f"{context.asset_key.to_user_string()} [{key}] failed: {type(outcome).__name__}: {outcome}")
            continue
        manifest, metadata = outcome
        manifests[key] = manifest
        context.add_asset_metadata(dict(metadata), partition_key=key)
    if failures:
        listing = "\n".join(f"- {key}: {type(exc).__name__}: {exc}" for key, exc in failures.items())
        raise dg.Failure(
            description=(
                f"{len(failures)} of {len(keys)} variants failed in {context.asset_key.to_user_string()}; "
                f"the other variants' artifacts are stored; re-materialize the failed partitions:\n{listing}"
            ),
            metadata={"failed_partitions": sorted(failures), "succeeded_partitions": sorted(manifests)},
        )
    return manifests
