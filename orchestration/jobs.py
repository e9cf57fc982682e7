"""Jobs for the common actions: produce a whole campaign, or regenerate one stage and what follows it."""

import dagster as dg

# Every stage for the selected variants; launched by the brief sensor, the repair schedule and `make demo`.
produce_campaign_job = dg.define_asset_job(
    name="produce_campaign",
    selection=dg.AssetSelection.all(),
    description="Brief to synced video for the selected variants (one run can cover a whole campaign).",
)


def _stage_job(name: str, first_asset: str, description: str):
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(first_asset).downstream(),
        description=description,
    )


# Regenerate one stage (e.g. after a model change) without redoing what is upstream of it.
regenerate_images_job = _stage_job("regenerate_images", "draft_image", "Draft and refined images, then the video.")
regenerate_voice_job = _stage_job("regenerate_voice", "voiceover", "Voiceover, captions, then the video.")
regenerate_video_job = _stage_job("regenerate_video", "synced_video", "Only the synced video.")

STAGE_JOBS = [regenerate_images_job, regenerate_voice_job, regenerate_video_job]
