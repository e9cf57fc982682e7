"""Run one stage for every partition key of a step, concurrently.

A single-run backfill hands one step many partition keys; a UI
materialization of one partition hands it one. Both go through here: the
per-variant coroutines run together on one event loop, bounded by the
router's per-provider limits. A variant that fails does not cancel the
others: their artifacts are stored, and the step then fails naming every
failed partition and why.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

from resources.manifests import VariantBriefDoc
from resources.model_router import ModelRouter, RouterSession, VariantContext

M = TypeVar("M")

StageWork = Callable[[str], Awaitable[tuple[M, Mapping[str, Any]]]]
RoutedStageWork = Callable[[RouterSession, str], Awaitable[tuple[M, Mapping[str, Any]]]]


def run_partitions(context: dg.AssetExecutionContext, work: StageWork[M]) -> dict[str, M]:
    """Run `work(partition_key)` for every key of the step; returns {key: manifest}."""
    keys = list(context.partition_keys)

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(work(key) for key in keys), return_exceptions=True)

    return _collect(context, keys, asyncio.run(run_all()))


def run_routed_partitions(
    context: dg.AssetExecutionContext, router: ModelRouter, artifacts: Any, work: RoutedStageWork[M]
) -> dict[str, M]:
    """Like `run_partitions`, with one router session shared by every variant of the step
    (its response cache keeps media in `artifacts`)."""
    keys = list(context.partition_keys)

    async def run_all() -> list[Any]:
        async with router.session(store=artifacts) as session:
            return await asyncio.gather(*(work(session, key) for key in keys), return_exceptions=True)

    return _collect(context, keys, asyncio.run(run_all()))


def _collect(context: dg.AssetExecutionContext, keys: list[str], outcomes: list[Any]) -> dict[str, M]:
    manifests: dict[str, M] = {}
    failures: dict[str, BaseException] = {}
    for key, outcome in zip(keys, outcomes):
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


def variant_context(spec: VariantBriefDoc) -> VariantContext:
    """What the router needs to know about a variant: route rules and the campaign budget."""
    return VariantContext(campaign_id=spec.campaign_id, budget_usd=spec.budget_usd, tier=spec.tier, locale=spec.locale)
