"""Pipelines as a Dagster Component: every file of config/pipelines/ becomes assets, checks, jobs and schedules.

`orchestration/defs/pipelines/defs.yaml` declares one `StudioPipelines`
component; `dg.load_from_defs_folder` (orchestration/definitions.py) loads it.
Its `build_defs` reads the routing config and the pipeline files, validates
them (orchestration/pipelines.py: errors name the file, stage and field) and
returns, per pipeline: the `brief` asset, the model step (one subsettable
multi-asset with each stage's checks beside it, assets/variant_media.py), the
roll-up, the budget check, `produce_<pipeline>` and the file's jobs, and the
nightly repair schedule; and one brief sensor for all of them.

The component keeps what the model step does without it: the step is the
same multi-asset (one pipelined step per run, materializations streamed as
stages settle); the component only decides which pipelines exist.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import build_pipeline_assets
from assets.stages import Pipeline
from orchestration.approval_sensor import build_approval_sensor
from orchestration.jobs import pipeline_jobs
from orchestration.pipelines import load_pipelines
from orchestration.schedules import nightly_repair
from orchestration.sensors import build_brief_sensor
from resources.routing_config import RoutingConfig, load_routing_config
from resources.settings import PROJECT_ROOT, pipelines_dir, routing_config_path


def pipelines_definitions(pipelines: dict[str, Pipeline], routing: RoutingConfig) -> dg.Definitions:
    """Everything the pipelines define, and the brief sensor that feeds them."""
    assets: list = []
    checks: list = []
    jobs: list = []
    produce_jobs: list = []
    schedules: list = []
    for pipeline in pipelines.values():
        pipeline_assets, pipeline_checks = build_pipeline_assets(pipeline, routing)
        assets += pipeline_assets
        checks += pipeline_checks
        own_jobs = pipeline_jobs(pipeline)
        produce_jobs.append(own_jobs[0])
        jobs += own_jobs
        schedules.append(nightly_repair(pipeline))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=[
            build_brief_sensor(pipelines, produce_jobs),
            # Only where some pipeline has an approval stage: verdicts become runs.
            *([build_approval_sensor(pipelines, produce_jobs)] if any(p.gates for p in pipelines.values()) else []),
        ],
    )


class StudioPipelines(dg.Component, dg.Model, dg.Resolvable):
    """The pipeline files of a folder (default: $STUDIO_PIPELINES_DIR or config/pipelines),
    resolved against a routing config (default: $STUDIO_ROUTING or config/routing.local.yaml)."""

    pipelines_dir: str | None = None  # relative to the project root
    routing: str | None = None

    def routing_path(self) -> Path:
        return PROJECT_ROOT / self.routing if self.routing else routing_config_path()

    def folder(self) -> Path:
        return PROJECT_ROOT / self.pipelines_dir if self.pipelines_dir else pipelines_dir()

    def resolve_pipelines(self) -> tuple[dict[str, Pipeline], RoutingConfig]:
        path = self.routing_path()
        routing = load_routing_config(path)
        return load_pipelines(self.folder(), routing, str(path)), routing

    def definitions(self) -> dg.Definitions:
        """What `build_defs` returns; it needs nothing from the load context (paths are the
        project's), so the dry run and tests build it with an explicit routing config too."""
        pipelines, routing = self.resolve_pipelines()
        return pipelines_definitions(pipelines, routing)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return self.definitions()
