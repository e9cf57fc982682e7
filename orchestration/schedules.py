"""The nightly repair: request a run for every registered variant that has no final stage yet
(never produced, or its last run failed), so unattended failures heal by morning. One per pipeline;
the variants go in runs of at most the pipeline's max_variants_per_run (orchestration/variant_runs.py)."""

import dagster as dg

from assets.stages import Pipeline
from orchestration.variant_runs import campaigns_tag, span_name, span_run_request, variant_spans


def variants_needing_repair(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[str]:
    registered = instance.get_dynamic_partitions(pipeline.partitions_name)
    done = instance.get_materialized_partitions(pipeline.key(pipeline.final_stage.name))
    return [key for key in registered if key not in done]


def nightly_repair(pipeline: Pipeline) -> dg.ScheduleDefinition:
    final = pipeline.final_stage.name

    @dg.schedule(
        name=pipeline.named("nightly_repair"),
        cron_schedule="0 3 * * *",
        job_name=pipeline.produce_job_name,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"03:00 daily: re-run {pipeline.name} variants that are registered but have no {final}.",
    )
    def repair(context: dg.ScheduleEvaluationContext):
        missing = variants_needing_repair(context.instance, pipeline)
        if not missing:
            return dg.SkipReason(f"every registered variant has a {final}")
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        registered = context.instance.get_dynamic_partitions(pipeline.partitions_name)
        return [
            span_run_request(
                span,
                job_name=pipeline.produce_job_name,
                run_key=f"repair:{day}:{span_name(span)}",
                tags={"campaign": campaigns_tag(span), "repair": "nightly"},
            )
            for span in variant_spans(missing, registered, pipeline.max_variants_per_run)
        ]

    return repair
