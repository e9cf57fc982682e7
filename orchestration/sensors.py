"""The brief sensor: validate briefs, register one partition per variant, request runs.

Runs are requested per chunk: a pipeline's new or changed variants in spans of at most its
`max_variants_per_run` neighbouring partitions (orchestration/variant_runs.py), each one run
that pipelines its variants, so a big campaign spreads over run workers and small ones share
a run, without paying a run's start-up per variant.

Each brief names its pipeline (`pipeline:`, default `campaign`); its variants
are registered in that pipeline's partitions and requested from its
`produce_<pipeline>` job. A brief naming no loaded pipeline is an error of
the brief (file and field named), like any other.

The cursor remembers each variant's fingerprint (the campaign fields plus
that variant) and which file declared each campaign, so only new or changed
variants are requested. An invalid brief is reported, naming the file and
the field, and never stops the sensor or the other briefs.

Removed briefs (and variants removed from a brief): their partitions are
KEPT, with their materializations and artifacts; the sensor logs what
disappeared and stops requesting runs for it. Nothing is deleted silently:
dropping partitions is a deliberate act in the UI (Partitions > delete) or
with `instance.delete_dynamic_partition`. A brief that comes back unchanged
is not regenerated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import dagster as dg

from assets.stages import Pipeline
from orchestration.pipelines import PipelineError, pipeline_for
from orchestration.variant_runs import campaigns_tag, span_name, span_run_request, variant_spans
from resources.brief_source import BriefFile, BriefSource

# A scan reads the briefs folder and the partition lists: cheap, so a dropped brief starts
# within seconds (the daemon's own loop adds up to a few more).
BRIEF_SCAN_INTERVAL_S = 5


@dataclass
class BriefScanOutcome:
    partitions_to_add: dict[str, list[str]] = field(default_factory=dict)  # pipeline -> new partition keys
    variants_to_run: dict[str, str] = field(default_factory=dict)  # partition key -> fingerprint
    campaigns: dict[str, list[str]] = field(default_factory=dict)  # campaign id -> its partition keys
    campaign_files: dict[str, str] = field(default_factory=dict)  # campaign id -> the brief file declaring it
    problems: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    pipelines: dict[str, str] = field(default_factory=dict)  # campaign id -> its pipeline
    approvals: dict[str, str] = field(default_factory=dict)  # campaign id -> its brief's approval mode
    rejected_paths: set[str] = field(default_factory=set)  # files that are there but cannot be used (being edited)


def plan_brief_changes(
    scanned: list[BriefFile],
    known_fingerprints: dict[str, str],
    existing_partitions: dict[str, set[str]],
    pipelines: dict[str, Pipeline] | None = None,
) -> BriefScanOutcome:
    """What to register and run, given the briefs on disk, what was seen before, the partitions
    each pipeline has ({pipeline: keys}) and the loaded pipelines (None: any name goes)."""
    outcome = BriefScanOutcome()
    owner_of_campaign: dict[str, str] = {}
    for brief_file in scanned:
        if brief_file.error is not None:
            outcome.problems.append(str(brief_file.error))
            outcome.rejected_paths.add(str(brief_file.path))
            continue
        brief = brief_file.brief
        if pipelines is not None:
            try:
                pipeline_for(brief, pipelines)
            except PipelineError as exc:
                outcome.problems.append(f"{brief_file.path}: {exc}")
                outcome.rejected_paths.add(str(brief_file.path))
                continue
        if brief.campaign_id in owner_of_campaign:
            outcome.problems.append(
                f"{brief_file.path}: campaign_id: {brief.campaign_id!r} is already declared by "
                f"{owner_of_campaign[brief.campaign_id]}; this file is ignored"
            )
            continue
        owner_of_campaign[brief.campaign_id] = str(brief_file.path)
        outcome.campaigns[brief.campaign_id] = brief.partition_keys()
        outcome.campaign_files[brief.campaign_id] = str(brief_file.path)
        outcome.pipelines[brief.campaign_id] = brief.pipeline
        outcome.approvals[brief.campaign_id] = brief.approval
        for variant in brief.variants:
            key = brief.partition_key(variant.id)
            fingerprint = brief.variant_fingerprint(variant.id)
            outcome.fingerprints[key] = fingerprint
            if key not in existing_partitions.get(brief.pipeline, set()):
                outcome.partitions_to_add.setdefault(brief.pipeline, []).append(key)
            if known_fingerprints.get(key) != fingerprint:
                outcome.variants_to_run[key] = fingerprint
    return outcome


def _load_cursor(raw: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(variant fingerprints, campaign -> brief file) from the cursor; empty when unreadable."""
    if not raw:
        return {}, {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    return data.get("fingerprints", {}), data.get("campaign_files", {})


def removed_since(previous_files: dict[str, str], outcome: BriefScanOutcome, invalid_paths: set[str]) -> list[str]:
    """Campaigns whose brief file is gone (an invalid file is not gone: it is being edited)."""
    return sorted(campaign for campaign, path in previous_files.items() if campaign not in outcome.campaigns and path not in invalid_paths)


def variant_run_requests(
    outcome: BriefScanOutcome, pipelines: dict[str, Pipeline], registered: dict[str, list[str]]
) -> list[dg.RunRequest]:
    """The new or changed variants as runs of at most the pipeline's `max_variants_per_run`
    neighbouring partitions (never one run per variant).

    A big campaign is several runs; small campaigns that change in the same tick share one
    (two sample briefs are one run, not two runs each loading the models and waiting for the
    other's model step). The partition order a range is read in is the instance's (keys added
    earlier first) followed by this tick's additions in brief order, which is how the daemon
    adds them. The run key names the span and hashes its variants' fingerprints: a span whose
    variants change again is a new run; the same tick evaluated twice is not.
    """
    requests: list[dg.RunRequest] = []
    for (name, _mode), changed in _changed_by_pipeline(outcome, pipelines).items():
        pipeline = pipelines[name]
        order = [*registered.get(name, []), *outcome.partitions_to_add.get(name, [])]
        for span in variant_spans(changed, order, pipeline.max_variants_per_run):
            digest = hashlib.sha256("|".join(f"{key}={outcome.variants_to_run[key]}" for key in span).encode()).hexdigest()[:16]
            requests.append(
                span_run_request(
                    span,
                    job_name=pipeline.produce_job_name,
                    run_key=f"{span_name(span)}:{digest}",
                    tags={"campaign": campaigns_tag(span), "studio/variants": str(len(span))},
                )
            )
    return requests


def _changed_by_pipeline(outcome: BriefScanOutcome, pipelines: dict[str, Pipeline]) -> dict[tuple[str, str], list[str]]:
    """(pipeline, approval mode) -> its new or changed variants. Campaigns that wait for approval
    never share a run with those that do not: a run records a stage for all its variants or none,
    so a waiting variant would keep the others' later stages unrecorded."""
    changed: dict[tuple[str, str], list[str]] = {}
    for campaign, keys in outcome.campaigns.items():
        name = outcome.pipelines[campaign]
        if name not in pipelines:
            continue
        mode = outcome.approvals.get(campaign, "auto") if pipelines[name].gates else "auto"
        changed.setdefault((name, mode), []).extend(key for key in keys if key in outcome.variants_to_run)
    return {group: keys for group, keys in changed.items() if keys}


def build_brief_sensor(pipelines: dict[str, Pipeline], produce_jobs: list) -> dg.SensorDefinition:
    """One sensor for the briefs folder; `produce_jobs`: each pipeline's `produce_<pipeline>` job."""

    @dg.sensor(
        name="brief_sensor",
        jobs=produce_jobs,
        minimum_interval_seconds=BRIEF_SCAN_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches the briefs folder: validates briefs, adds a partition per variant in its pipeline, requests runs "
            "for new or changed variants, per campaign in chunks of the pipeline's max_variants_per_run."
        ),
    )
    def brief_sensor(context: dg.SensorEvaluationContext, briefs: BriefSource) -> dg.SensorResult:
        return evaluate_briefs(context, briefs, pipelines)

    return brief_sensor


def evaluate_briefs(context: dg.SensorEvaluationContext, briefs: BriefSource, pipelines: dict[str, Pipeline]) -> dg.SensorResult:
    known, previous_files = _load_cursor(context.cursor)
    # Each pipeline's partitions in the order they were added (the order a partition range is read in).
    registered = {name: list(context.instance.get_dynamic_partitions(p.partitions_name)) for name, p in pipelines.items()}
    existing = {name: set(keys) for name, keys in registered.items()}
    every_existing = set().union(*existing.values()) if existing else set()
    scanned = briefs.scan()
    outcome = plan_brief_changes(scanned, known, existing, pipelines)
    for problem in outcome.problems:
        context.log.error(f"invalid brief: {problem}")
    removed = removed_since(previous_files, outcome, outcome.rejected_paths)
    for campaign in removed:
        kept = sorted(k for k in every_existing if k.startswith(campaign + "."))
        context.log.warning(
            f"brief for campaign {campaign!r} ({previous_files[campaign]}) was removed; its {len(kept)} partition(s) "
            "and their artifacts are kept (delete the partitions in the UI to drop them)"
        )
    for campaign, keys in outcome.campaigns.items():
        dropped = sorted(k for k in existing[outcome.pipelines[campaign]] if k.startswith(campaign + ".") and k not in keys)
        if dropped:
            context.log.warning(f"variants removed from {campaign!r}: {', '.join(dropped)}; their partitions are kept")

    run_requests = variant_run_requests(outcome, pipelines, registered)
    # Fingerprints of vanished or unreadable briefs stay, so a brief that comes
    # back unchanged (or a typo fixed) does not regenerate anything.
    campaign_files = {c: p for c, p in previous_files.items() if c not in removed}
    campaign_files.update(outcome.campaign_files)
    cursor = json.dumps({"fingerprints": {**known, **outcome.fingerprints}, "campaign_files": campaign_files}, sort_keys=True)
    partition_requests = [
        pipelines[name].partitions_def.build_add_request(keys) for name, keys in sorted(outcome.partitions_to_add.items())
    ]
    skip_reason = None
    if not run_requests:
        skip_reason = "no new or changed variants"
        if outcome.problems:
            skip_reason += "; invalid briefs: " + " | ".join(outcome.problems)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        cursor=cursor,
        skip_reason=skip_reason,
    )
