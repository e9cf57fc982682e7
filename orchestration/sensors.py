"""The brief sensor: validate briefs, register one partition per variant, request runs.

The cursor remembers each file's hash and each variant's fingerprint (the
campaign fields plus that variant), so only new or changed variants are
requested. An invalid brief is reported, naming the file and the field, and
never stops the sensor or the other briefs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg

from assets.partitions import variant_partitions
from orchestration.jobs import produce_campaign_job
from resources.brief_source import BriefFile, BriefSource


@dataclass
class BriefScanOutcome:
    partitions_to_add: list[str] = field(default_factory=list)
    variants_to_run: dict[str, str] = field(default_factory=dict)  # partition key -> fingerprint
    campaigns: dict[str, list[str]] = field(default_factory=dict)  # campaign id -> its partition keys
    problems: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)


def plan_brief_changes(scanned: list[BriefFile], known_fingerprints: dict[str, str], existing_partitions: set[str]) -> BriefScanOutcome:
    """What to register and run, given the briefs on disk and what was seen before."""
    outcome = BriefScanOutcome()
    owner_of_campaign: dict[str, str] = {}
    for brief_file in scanned:
        if brief_file.error is not None:
            outcome.problems.append(str(brief_file.error))
            continue
        brief = brief_file.brief
        if brief.campaign_id in owner_of_campaign:
            outcome.problems.append(
                f"{brief_file.path}: campaign_id: {brief.campaign_id!r} is already declared by "
                f"{owner_of_campaign[brief.campaign_id]}; this file is ignored"
            )
            continue
        owner_of_campaign[brief.campaign_id] = str(brief_file.path)
        outcome.campaigns[brief.campaign_id] = brief.partition_keys()
        for variant in brief.variants:
            key = brief.partition_key(variant.id)
            fingerprint = brief.variant_fingerprint(variant.id)
            outcome.fingerprints[key] = fingerprint
            if key not in existing_partitions:
                outcome.partitions_to_add.append(key)
            if known_fingerprints.get(key) != fingerprint:
                outcome.variants_to_run[key] = fingerprint
    return outcome


def _load_cursor(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return data.get("fingerprints", {}) if isinstance(data, dict) else {}


@dg.sensor(
    name="brief_sensor",
    job=produce_campaign_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the briefs folder: validates briefs, adds a partition per variant, requests runs for new or changed variants.",
)
def brief_sensor(context: dg.SensorEvaluationContext, briefs: BriefSource) -> dg.SensorResult:
    known = _load_cursor(context.cursor)
    existing = set(context.instance.get_dynamic_partitions(variant_partitions.name))
    outcome = plan_brief_changes(briefs.scan(), known, existing)
    for problem in outcome.problems:
        context.log.error(f"invalid brief: {problem}")

    run_requests = [
        dg.RunRequest(
            run_key=f"{key}:{fingerprint[:16]}",
            partition_key=key,
            tags={"campaign": key.split(".", 1)[0]},
        )
        for key, fingerprint in outcome.variants_to_run.items()
    ]
    # Keep fingerprints of variants that vanished with an unreadable brief, so
    # fixing a typo does not regenerate everything.
    cursor = json.dumps({"fingerprints": {**known, **outcome.fingerprints}}, sort_keys=True)
    partition_requests = [variant_partitions.build_add_request(outcome.partitions_to_add)] if outcome.partitions_to_add else []
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
