"""The approval sensor: reviewers' verdicts become runs.

A verdict is an observation of an approval stage's asset (assets/approvals.py).
Each tick reads the verdicts recorded since the last one (the cursor is the
event log's storage id, so a restart neither loses nor repeats one) and asks:

- for an approval: the approval stage and everything after it, for the
  approved variants (in spans of the pipeline's `max_variants_per_run`), so the
  variant resumes where it waited;
- for a rejection that asks for it (`regenerate`): the gated stage and the
  approval stage, so the stage is made again with a new seed and the new
  version waits for its own verdict.

A rejection without `regenerate` asks for nothing: the variant stays stopped
until its brief or the pipeline changes.
"""

from __future__ import annotations

from collections import defaultdict

import dagster as dg

from assets.approvals import VERDICT_METADATA_KEY
from assets.stages import Pipeline
from orchestration.variant_runs import campaigns_tag, span_name, span_run_request, variant_spans
from resources.manifests import Verdict

APPROVAL_SCAN_INTERVAL_S = 5
_PAGE = 1000


def new_verdicts(instance: dg.DagsterInstance, pipeline: Pipeline, gate: str, after_storage_id: int) -> list[tuple[int, str, Verdict]]:
    """(storage id, partition key, verdict) of the verdicts on `gate` after the cursor, oldest first."""
    found, cursor = [], None
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=pipeline.key(gate), after_storage_id=after_storage_id),
            limit=_PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            value = record.asset_observation.metadata.get(VERDICT_METADATA_KEY) if record.asset_observation else None
            if value is not None and isinstance(getattr(value, "value", None), dict) and record.partition_key:
                found.append((record.storage_id, record.partition_key, Verdict.model_validate(value.value)))
        if not result.has_more:
            return found
        cursor = result.cursor


def verdict_run_requests(context: dg.SensorEvaluationContext, pipelines: dict[str, Pipeline]) -> tuple[list[dg.RunRequest], int]:
    """The runs the verdicts since the cursor ask for, and the new cursor."""
    after = int(context.cursor or 0)
    newest = after
    requests: list[dg.RunRequest] = []
    for pipeline in pipelines.values():
        order = None
        for gate in pipeline.gates:
            wanted: dict[str, list[str]] = defaultdict(list)  # what to run -> partition keys
            for storage_id, key, verdict in new_verdicts(context.instance, pipeline, gate.name, after):
                newest = max(newest, storage_id)
                if verdict.decision == "approved":
                    wanted["resume"].append(key)
                elif verdict.regenerate:
                    wanted["remake"].append(key)
            if not wanted:
                continue
            if order is None:
                order = list(context.instance.get_dynamic_partitions(pipeline.partitions_name))
            subject = pipeline.gate_subject(gate.name)
            for action, keys in wanted.items():
                stages = pipeline.downstream([gate.name]) if action == "resume" else (subject, gate.name)
                keys = [key for key in dict.fromkeys(keys) if key in order]
                for span in variant_spans(keys, order, pipeline.max_variants_per_run):
                    requests.append(
                        span_run_request(
                            span,
                            job_name=pipeline.produce_job_name,
                            run_key=f"{gate.name}:{action}:{span_name(span)}:{newest}",
                            tags={
                                "campaign": campaigns_tag(span),
                                "studio/variants": str(len(span)),
                                "studio/approval": f"{gate.name}:{action}",
                            },
                            asset_selection=[pipeline.key(name) for name in stages],
                        )
                    )
    return requests, newest


def build_approval_sensor(pipelines: dict[str, Pipeline], produce_jobs: list) -> dg.SensorDefinition:
    @dg.sensor(
        name="approval_sensor",
        jobs=produce_jobs,
        minimum_interval_seconds=APPROVAL_SCAN_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Turns reviewers' verdicts into runs: an approved variant resumes after its approval stage; a rejection "
            "with regenerate makes the stage again with a new seed, and the new version waits for its own verdict."
        ),
    )
    def approval_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        requests, cursor = verdict_run_requests(context, pipelines)
        return dg.SensorResult(run_requests=requests, cursor=str(cursor), skip_reason=None if requests else "no new verdicts")

    return approval_sensor
