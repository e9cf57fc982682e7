"""The software-defined assets of every pipeline.

Per pipeline (config/pipelines/*.yaml, resolved by orchestration/pipelines.py):

    brief -> <the pipeline's stages, one multi-asset step> -> campaign_rollup

`brief` is its own step (it reads the briefs folder); the stages are one
subsettable multi-asset step, so a variant's stages pipeline
(assets/variant_media.py); the roll-up gathers finished campaigns (and,
while the routing runs an experiment on one of the pipeline's tasks,
`campaign_report` compares its arms: assets/report.py). Stages
that call models take their code version from the routing config's identity
for their task, so changing the model behind a task shows in the UI as a code
change on exactly the assets it affects.
"""

import dagster as dg

from assets.brief import build_brief_asset
from assets.checks import build_budget_check
from assets.report import build_campaign_report_asset, experiment_stages
from assets.rollup import build_campaign_rollup_asset
from assets.stages import Pipeline
from assets.variant_media import build_variant_media_asset
from resources.routing_config import RoutingConfig


def stage_code_versions(pipeline: Pipeline, routing: RoutingConfig) -> dict[str, str]:
    """Stage name -> code version: the kind's own revision, and the route's identity for routed stages."""
    return {
        stage.name: f"{stage.kind.code_revision}-{routing.task_identity(stage.task)}" if stage.task else stage.kind.code_revision
        for stage in pipeline.stages
    }


def build_pipeline_assets(pipeline: Pipeline, routing: RoutingConfig) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The pipeline's assets (brief, the model step, the roll-up) and its check steps."""
    assets = [
        build_brief_asset(pipeline),
        build_variant_media_asset(pipeline, stage_code_versions(pipeline, routing)),
        build_campaign_rollup_asset(pipeline),
    ]
    if experiment_stages(pipeline, routing):  # the arms of the routing's experiments side by side
        assets.append(build_campaign_report_asset(pipeline, routing))
    return assets, [build_budget_check(pipeline)]
