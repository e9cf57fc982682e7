"""The code location: assets, resources, jobs and sensors, built when Dagster loads it.

`@dg.definitions` defers the work (reading the routing config, building the
assets) from import time to load time, so importing this module has no side
effects. The routing config is validated here: a bad config fails the load
with a message naming the file and the field.

Two settings are read here, at load, and nowhere else: `STUDIO_ENV` picks the
storage (orchestration/storage.py: filesystem or S3) and
`STUDIO_DEPLOY_TARGET` picks the executor and per-stage placement
(orchestration/deployment.py: local, ECS or Kubernetes).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import build_assets
from assets.checks import build_asset_checks
from assets.rollup import build_campaign_rollup_asset
from orchestration.deployment import apply_deployment_target, check_storage_for_target
from orchestration.jobs import STAGE_JOBS, produce_campaign_job
from orchestration.schedules import nightly_repair
from orchestration.sensors import brief_sensor
from orchestration.storage import storage_resources
from resources.brief_source import BriefSource
from resources.model_router import ModelRouter
from resources.routing_config import RoutingConfig, load_routing_config
from resources.settings import deploy_target, routing_config_path, studio_env


def provider_resource_key(provider_id: str) -> str:
    return "provider_" + provider_id.replace("-", "_")


def build_resources(routing: RoutingConfig, routing_path: Path, environment: str | None = None) -> dict[str, object]:
    """The router, its providers, the brief source, and the storage of `environment`
    (default `STUDIO_ENV`): `artifacts` and `manifest_io_manager`."""
    router = ModelRouter.from_config(routing, str(routing_path))
    resources: dict[str, object] = {
        "router": router,
        "briefs": BriefSource(),
        **storage_resources(environment),
    }
    # Each provider also stands alone, so the resources page lists every model
    # with its settings (never its key: only the variable name is config).
    for provider_id, provider in router.providers.items():
        resources[provider_resource_key(provider_id)] = provider
    return resources


# Evaluates every asset's automation condition: downstream stages follow their
# inputs, a stage whose model route changed is regenerated, the roll-up follows
# its campaign's variants. (Dagster's default automation sensor starts stopped.)
automation_sensor = dg.AutomationConditionSensorDefinition(
    "studio_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)


def build_definitions(routing_path: str | Path | None = None) -> dg.Definitions:
    path = Path(routing_path) if routing_path else routing_config_path()
    routing = load_routing_config(path)
    environment, target = studio_env(), deploy_target()
    check_storage_for_target(target, environment)
    # Locally and on ECS steps run in the run's own process (torch and the models
    # load once per run; variants run concurrently inside each step); on
    # Kubernetes each step gets a pod placed for its stage (GPU for torch stages).
    assets, executor = apply_deployment_target(build_assets(routing) + [build_campaign_rollup_asset()], target)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_asset_checks(),
        resources=build_resources(routing, path, environment),
        jobs=[produce_campaign_job, *STAGE_JOBS],
        sensors=[brief_sensor, automation_sensor],
        schedules=[nightly_repair],
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
