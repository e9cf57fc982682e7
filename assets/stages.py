"""A stage: how one variant's asset is made from its inputs.

Each stage module (concept, images, voiceover, captions, video) defines one or
two `Stage`s: the asset's spec (name, upstream assets, group, kinds,
description) and a coroutine that makes one variant's manifest and the
materialization metadata the UI shows. `assets/variant_media.py` runs the
stages of every variant of a run as one pipeline.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from resources.artifact_store import BaseArtifactStore
from resources.manifests import Manifest, VariantBriefDoc
from resources.model_router import RouterSession, VariantContext


class DraftImageSettings(dg.Config):
    short_side: int = 576


class RefinedImageSettings(dg.Config):
    min_short_side: int = 1080


class VideoSettings(dg.Config):
    short_side: int = 720  # 720p class: 720x1280, 720x720, 1280x720
    fps: int = 30
    tail_s: float = 0.5  # picture held after the voice ends


class VariantMediaSettings(dg.Config):
    """Run config of the `variant_media` step, one section per stage that has settings."""

    draft_image: DraftImageSettings = DraftImageSettings()
    refined_image: RefinedImageSettings = RefinedImageSettings()
    synced_video: VideoSettings = VideoSettings()
    # Make and record every selected stage even where nothing changed (assets/reuse.py);
    # provider answers still come from the response cache where the routing allows it.
    force: bool = False


@dataclass(frozen=True)
class StageCall:
    """What a stage gets for one variant: the router session, the artifact store,
    the step's settings, the variant's brief and its upstream stages' manifests."""

    session: RouterSession
    artifacts: BaseArtifactStore
    settings: VariantMediaSettings
    partition_key: str
    spec: VariantBriefDoc
    inputs: Mapping[str, Manifest]

    def variant(self) -> VariantContext:
        """What the router needs to know about the variant: route rules and the campaign budget."""
        spec = self.spec
        return VariantContext(campaign_id=spec.campaign_id, budget_usd=spec.budget_usd, tier=spec.tier, locale=spec.locale)

    async def off_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """CPU and disk work (decoding, thumbnails, storing) in a thread, so the
        event loop keeps issuing the other variants' calls meanwhile."""
        return await asyncio.to_thread(fn, *args, **kwargs)


StageWork = Callable[[StageCall], Awaitable[tuple[Manifest, Mapping[str, Any]]]]


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]  # other stages this one reads (besides `brief`, which every stage reads)
    task: str | None  # the routed task; its route's identity is part of the code version
    group: str
    kinds: frozenset[str]
    description: str
    work: StageWork
    own_code_version: str = "1"  # bumped when the stage's own code changes what it produces
