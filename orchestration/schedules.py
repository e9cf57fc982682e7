"""The nightly repair: request a run for every registered variant that has no final stage yet
(never produced, or its last run failed), so unattended failures heal by morning. One per pipeline;
the variants go in runs of at most the pipeline's max_variants_per_run (orchestration/variant_runs.py).

A variant that waits for a reviewer (assets/approvals.py: pending, or rejected) is not broken: it is
left to the review page and the approval sensor. Variants of campaigns that ask for approval never
share a run with the others (a run records a stage for all its variants or none)."""

import dagster as dg

from assets.stages import Pipeline
from orchestration.variant_runs import campaigns_tag, span_name, span_run_request, variant_spans


def variants_needing_repair(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[str]:
    registered = instance.get_dynamic_partitions(pipeline.partitions_name)
    done = instance.get_materialized_partitions(pipeline.key(pipeline.final_stage.name))
    return [key for key in registered if key not in done]


def repair_groups(instance: dg.DagsterInstance, pipeline: Pipeline, missing: list[str]) -> list[list[str]]:
    """The variants to repair, as [no approval asked, approval asked]: without those that wait for
    a reviewer. A pipeline without an approval stage is one group; nothing is read for it."""
    if not pipeline.gates or not missing:
        return [missing]
    from assets.approvals import review_states
    from orchestration.storage import built_storage

    with built_storage() as (_, manifests):
        states = review_states(instance, [pipeline], manifests=manifests, partition_keys=missing)
    waiting = {state.partition_key for state in states if state.in_review}
    asked = {state.partition_key for state in states if state.mode == "required"}
    keep = [key for key in missing if key not in waiting]
    return [group for group in ([k for k in keep if k not in asked], [k for k in keep if k in asked]) if group]


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
        groups = repair_groups(context.instance, pipeline, missing)
        if not any(groups):
            return dg.SkipReason(f"every variant without a {final} waits for a reviewer's verdict")
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        registered = context.instance.get_dynamic_partitions(pipeline.partitions_name)
        return [
            span_run_request(
                span,
                job_name=pipeline.produce_job_name,
                run_key=f"repair:{day}:{span_name(span)}",
                tags={"campaign": campaigns_tag(span), "repair": "nightly"},
            )
            for keys in groups
            for span in variant_spans(keys, registered, pipeline.max_variants_per_run)
        ]

    return repair
