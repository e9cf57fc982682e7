"""Jobs for the common actions."""

import dagster as dg

# Every stage for the selected variants; launched by the brief sensor and `make demo`.
produce_campaign_job = dg.define_asset_job(
    name="produce_campaign",
    selection=dg.AssetSelection.all(),
    description="Brief to synced video for the selected variants (one run can cover a whole campaign).",
)
