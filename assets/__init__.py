"""The software-defined assets.

brief -> concept -> draft_image -> refined_image --+
               \\-> voiceover -> captions --------+-> synced_video

`brief` is its own step (it reads the briefs folder); the model stages are
one subsettable multi-asset step, `variant_media`, so a variant's stages
pipeline (assets/variant_media.py). Stages that call models take their code
version from the routing config's identity for their task, so changing the
model behind a task shows in the UI as a code change on exactly the assets it
affects.
"""

import dagster as dg

from assets.brief import build_brief_asset
from assets.variant_media import STAGES, build_variant_media_asset
from resources.routing_config import RoutingConfig

# Bumped when an asset's own code changes what it produces.
ASSET_CODE_REVISION = "1"


def stage_code_versions(routing: RoutingConfig) -> dict[str, str]:
    return {
        stage.name: (
            f"{ASSET_CODE_REVISION}-{routing.task_identity(stage.task)}" if stage.task else stage.own_code_version
        )
        for stage in STAGES
    }


def build_assets(routing: RoutingConfig) -> list[dg.AssetsDefinition]:
    return [build_brief_asset(), build_variant_media_asset(stage_code_versions(routing))]
