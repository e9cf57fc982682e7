"""The software-defined assets, one module per stage.

brief -> concept -> draft_image -> refined_image --+
               \\-> voiceover -> captions --------+-> synced_video

Assets that call models take their code version from the routing config's
identity for their task, so changing the model behind a task shows in the UI
as a code change on exactly the assets it affects.
"""

import dagster as dg

from assets.brief import build_brief_asset
from assets.captions import build_captions_asset
from assets.concept import build_concept_asset
from assets.images import build_draft_image_asset, build_refined_image_asset
from assets.video import build_synced_video_asset
from assets.voiceover import build_voiceover_asset
from resources.routing_config import RoutingConfig

# Bumped when an asset's own code changes what it produces.
ASSET_CODE_REVISION = "1"


def build_assets(routing: RoutingConfig) -> list[dg.AssetsDefinition]:
    def version(task: str) -> str:
        return f"{ASSET_CODE_REVISION}-{routing.task_identity(task)}"

    return [
        build_brief_asset(),
        build_concept_asset(version("concept")),
        build_draft_image_asset(version("image")),
        build_refined_image_asset(version("refine")),
        build_voiceover_asset(version("voice")),
        build_captions_asset(),
        build_synced_video_asset(version("video")),
    ]
