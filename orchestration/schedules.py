"""The nightly repair: request a run for every registered variant that has no synced video yet
(never produced, or its last run failed), so unattended failures heal by morning."""

import dagster as dg

from assets.partitions import variant_partitions
from orchestration.jobs import produce_campaign_job

FINAL_ASSET = dg.AssetKey("synced_video")


def variants_needing_repair(instance: dg.DagsterInstance) -> list[str]:
    registered = instance.get_dynamic_partitions(variant_partitions.name)
    done = instance.get_materialized_partitions(FINAL_ASSET)
    return [key for key in registered if key not in done]


@dg.schedule(
    name="nightly_repair",
    cron_schedule="0 3 * * *",
    job=produce_campaign_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:00 daily: re-run variants that are registered but have no synced video.",
)
def nightly_repair(context: dg.ScheduleEvaluationContext):
    missing = variants_needing_repair(context.instance)
    if not missing:
        return dg.SkipReason("every registered variant has a synced video")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        dg.RunRequest(run_key=f"repair:{day}:{key}", partition_key=key, tags={"campaign": key.split(".", 1)[0], "repair": "nightly"})
        for key in missing
    ]
