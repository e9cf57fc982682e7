"""The code location: assets, resources, jobs and sensors, built when Dagster loads it.

`@dg.definitions` defers the work (reading the routing config, building the
assets) from import time to load time, so importing this module has no side
effects. The routing config is validated here: a bad config fails the load
with a message naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import build_assets
from assets.common import MANIFEST_IO_MANAGER_KEY
from orchestration.jobs import produce_campaign_job
from orchestration.sensors import brief_sensor
from resources.artifact_store import ArtifactStore
from resources.brief_source import BriefSource
from resources.io_manager import JsonManifestIOManager
from resources.model_router import ModelRouter
from resources.routing_config import RoutingConfig, load_routing_config
from resources.settings import routing_config_path


def provider_resource_key(provider_id: str) -> str:
    return "provider_" + provider_id.replace("-", "_")


def build_resources(routing: RoutingConfig, routing_path: Path) -> dict[str, object]:
    router = ModelRouter.from_config(routing, str(routing_path))
    resources: dict[str, object] = {
        "router": router,
        "artifacts": ArtifactStore(),
        "briefs": BriefSource(),
        MANIFEST_IO_MANAGER_KEY: JsonManifestIOManager(),
    }
    # Each provider also stands alone, so the resources page lists every model
    # with its settings (never its key: only the variable name is config).
    for provider_id, provider in router.providers.items():
        resources[provider_resource_key(provider_id)] = provider
    return resources


def build_definitions(routing_path: str | Path | None = None) -> dg.Definitions:
    path = Path(routing_path) if routing_path else routing_config_path()
    routing = load_routing_config(path)
    return dg.Definitions(
        assets=build_assets(routing),
        resources=build_resources(routing, path),
        jobs=[produce_campaign_job],
        sensors=[brief_sensor],
        # Steps run in the run's own process: a subprocess per step would
        # re-import torch and reload models for each stage (seconds each on
        # 2 cores). Parallelism comes from variants within a step instead.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
