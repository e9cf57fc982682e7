"""Route experiments in the model step: a shadow's candidate make, and the numbers checks measured.

A share experiment needs nothing here: the router picks the variant's arm
(resources/routing_config.py) and stamps it on the answer's provenance. A
shadow experiment makes the stage twice for the variant, concurrently: the
control's make flows on as always; the candidate's make (the same stage work,
the same inputs, its calls forced onto the candidate route, budgeted and
limited like any call) is stored in the artifact store, checked with the
stage's checks, and recorded on the control's manifest as `shadow`. Nothing
reads it downstream: `shadow` is not part of a manifest's content
(assets/reuse.py), so later stages are neither made from it nor made again
because of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets.checks import measured
from assets.metadata import artifact_metadata
from assets.stages import CheckOutcome, PipelineStage, StageCall, StageCheck, StageCheckInput
from model_adapters.received import error_text
from resources.manifests import ShadowOutput
from resources.routing_config import Experiment


def check_measurements(outcomes: Mapping[str, CheckOutcome]) -> dict[str, float]:
    """Each check's numeric measurements as `<check>.<measure>` (flags and texts left out)."""
    found: dict[str, float] = {}
    for name, outcome in outcomes.items():
        for measure, value in outcome.metadata.items():
            value = getattr(value, "value", value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            found[f"{name}.{measure}"] = float(value)
    return found


async def make_shadow(experiment: Experiment, stage: PipelineStage, call: StageCall, checks: list[StageCheck]) -> ShadowOutput:
    """The candidate route's make of the stage for the variant: stored, checked, described.
    A candidate that fails is recorded as such; it never fails the variant."""
    candidate = dataclasses.replace(call, arm="candidate", rejected=(), answers=[])
    try:
        manifest, _ = await stage.kind.work(candidate)
    except Exception as exc:  # the candidate's failure is a finding, not the variant's
        answered = candidate.answers[-1] if candidate.answers else None
        return ShadowOutput(experiment=experiment.name, provenance=answered, error=error_text(exc))
    item = StageCheckInput(call.artifacts, call.spec, manifest, call.inputs, call.settings)
    outcomes = await asyncio.to_thread(lambda: {check.name: measured(check.kind.evaluate, item) for check in checks})
    passed = tuple(name for name, outcome in outcomes.items() if outcome.passed)
    stored = manifest.model_copy(update={"checks_passed": passed, "check_measurements": check_measurements(outcomes)})
    manifest_ref = await call.off_loop(
        call.artifacts.put,
        json.dumps(stored.model_dump(mode="json"), sort_keys=True).encode(),
        extension=".json",
        media_type="application/json",
    )
    tile = stage.kind.contact_sheet_tile(manifest) if stage.kind.contact_sheet_tile is not None else None
    return ShadowOutput(
        experiment=experiment.name,
        provenance=manifest.provenance,
        manifest=manifest_ref,
        tile=tile,
        checks_passed=passed,
        checks_failed=tuple(name for name, outcome in outcomes.items() if not outcome.passed),
        check_measurements=stored.check_measurements,
    )


def shadow_metadata(shadow: ShadowOutput) -> dict[str, Any]:
    """The candidate's make on the control's materialization: the UI shows both side by side."""
    metadata: dict[str, Any] = {"shadow_experiment": shadow.experiment}
    if shadow.provenance is not None:
        metadata.update(
            shadow_provider=shadow.provenance.adapter_id,
            shadow_model=f"{shadow.provenance.model}@{shadow.provenance.model_version}",
            shadow_cost_usd=dg.MetadataValue.float(shadow.provenance.cost_usd),
            shadow_latency_s=dg.MetadataValue.float(shadow.provenance.latency_s),
        )
    if shadow.error is not None:
        metadata["shadow_error"] = shadow.error
    else:
        verdicts = [f"- {name}: passed" for name in shadow.checks_passed] + [f"- {name}: **failed**" for name in shadow.checks_failed]
        metadata["shadow_checks"] = dg.MetadataValue.md("\n".join(verdicts) or "none run")
        metadata.update(artifact_metadata(shadow.manifest, "shadow_manifest"))
    return metadata


async def work_with_shadow(stage: PipelineStage, call: StageCall, checks: list[StageCheck]) -> tuple[Any, Mapping[str, Any]]:
    """The stage's work for the variant; in a shadow experiment, the candidate's make beside it
    (concurrently), recorded on the manifest as `shadow` and in the metadata."""
    experiment = call.session.shadow_experiment(stage.task, call.variant()) if stage.task is not None else None
    if experiment is None:
        return await stage.kind.work(call)
    shadow_make = asyncio.ensure_future(make_shadow(experiment, stage, call, checks))
    try:
        manifest, metadata = await stage.kind.work(call)
    except BaseException:
        shadow_make.cancel()  # the variant failed here: nothing to record the candidate on
        await asyncio.gather(shadow_make, return_exceptions=True)
        raise
    shadow = await shadow_make
    return manifest.model_copy(update={"shadow": shadow}), {**metadata, **shadow_metadata(shadow)}
