"""The code location: the pipelines (a Dagster Component), resources, automation, executor.

`@dg.definitions` defers the work (reading the routing config and the
pipeline files, building the assets) from import time to load time, so
importing this module has no side effects. The pipelines come from the
project's defs folder (`orchestration/defs/`, loaded by
`dg.load_from_defs_folder`: the `StudioPipelines` component of
orchestration/components.py). The routing config and every pipeline file are
validated here: a bad one fails the load with a message naming the file and
the field.

Two settings are read here, at load, and nowhere else: `STUDIO_ENV` picks the
storage (orchestration/storage.py: filesystem or S3) and
`STUDIO_DEPLOY_TARGET` picks the executor and per-stage placement
(orchestration/deployment.py: local, ECS or Kubernetes).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.components import StudioPipelines
from orchestration.deployment import apply_deployment_target, check_storage_for_target
from orchestration.storage import storage_resources
from resources.brief_source import BriefSource
from resources.model_router import ModelRouter
from resources.routing_config import RoutingConfig, load_routing_config
from resources.settings import PROJECT_ROOT, deploy_target, routing_config_path, studio_env


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


def pipeline_definitions(routing_path: Path | None = None) -> dg.Definitions:
    """The pipelines' definitions: through the project's defs folder, or, for an explicit
    routing config (the dry run, tests), the same component built with it."""
    if routing_path is None:
        return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    return StudioPipelines(routing=str(routing_path)).definitions()


def build_definitions(routing_path: str | Path | None = None) -> dg.Definitions:
    explicit = Path(routing_path).resolve() if routing_path else None
    path = explicit or routing_config_path()
    routing = load_routing_config(path)
    environment, target = studio_env(), deploy_target()
    check_storage_for_target(target, environment)
    # The registries of tasks and adapter kinds are checked where the pipelines load.
    pipelines = pipeline_definitions(explicit)
    # Locally and on ECS steps run in the run's own process (torch and the models
    # load once per run; variants run concurrently inside each step); on
    # Kubernetes each step gets a pod placed for its stages (GPU when one wants it).
    assets, executor = apply_deployment_target(list(pipelines.assets or []), target)
    return dg.Definitions(
        assets=assets,
        asset_checks=list(pipelines.asset_checks or []),
        resources=build_resources(routing, path, environment),
        jobs=list(pipelines.jobs or []),
        sensors=[*(pipelines.sensors or []), automation_sensor],
        schedules=list(pipelines.schedules or []),
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
