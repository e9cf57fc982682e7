"""Approval gates: reviewers' verdicts, where they are kept, and what waits for one.

An approval stage (kind `approval`, assets/stage_kinds/approval.py) judges one
output of another stage, its *subject*, by content digest. Every stage that
reads the subject reads the approval stage too (orchestration/pipelines.py),
so while a variant waits nothing after the subject is made or paid for; other
variants go on.

A verdict is an `AssetObservation` of the approval stage's asset for the
variant's partition, reported through the Dagster instance, with the verdict
as metadata: the UI shows it on the asset's page, and on a Postgres instance
it is as durable as the event log. A verdict judges one version of the
subject: when the subject is made again (a rejection that asks for it, a new
brief, a new model), the new version waits for its own verdict.

- `record_verdict`: approve or reject what waits (the CLI and the review app);
- `review_states` / `pending_reviews`: what each variant's gates wait for;
- `Reviews`: what the model step reads while it runs (the verdict for a
  version, how many times a subject was sent back to be made again).

The approval sensor (orchestration/approval_sensor.py) turns new verdicts into
runs: an approval resumes the variant, a rejection with `regenerate` remakes
the subject with a new seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg

from assets.engine import Waiting
from assets.reuse import content_digest
from assets.stages import Pipeline
from resources.manifests import Verdict

VERDICT_METADATA_KEY = "verdict"
DECISIONS = ("approved", "rejected")
# Seeds of a subject made again after a rejection: far from the quality retries' seed + 1, + 2.
RESEED_STRIDE = 1_000_003


class ReviewError(ValueError):
    """A verdict that cannot be recorded (no such variant, nothing waiting): nothing was recorded."""


class AwaitingApproval(Waiting):
    """The variant's subject has no approving verdict yet: what follows it is not made."""


class ManifestReader(Protocol):
    def load_manifest(self, asset_key: dg.AssetKey, partition_key: str) -> Any: ...


def subject_version(manifest: Any) -> str:
    """The identity a verdict is about: the digest of what the subject's output says (its files,
    text, timings), not of how it was made."""
    return content_digest(manifest)


def reseeded(seed: int, regenerations: int) -> int:
    """The seed of a subject made again after `regenerations` rejections that asked for it."""
    return (seed + RESEED_STRIDE * regenerations) % 2**31 if regenerations else seed


def _verdicts(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str, limit: int = 200) -> list[Verdict]:
    """Every verdict on one gate of one variant, newest first."""
    result = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=limit)
    found = []
    for record in result.records:
        observation = record.asset_observation
        value = observation.metadata.get(VERDICT_METADATA_KEY) if observation is not None else None
        if value is not None and isinstance(getattr(value, "value", None), dict):
            found.append(Verdict.model_validate(value.value))
    return found


class Reviews:
    """The verdicts a model step reads, per gate and variant, read once per run."""

    def __init__(self, instance: dg.DagsterInstance | None, pipeline: Pipeline):
        self.instance, self.pipeline = instance, pipeline
        self._read: dict[tuple[str, str], list[Verdict]] = {}

    def verdicts(self, gate: str, partition_key: str) -> list[Verdict]:
        if self.instance is None:
            return []
        if (gate, partition_key) not in self._read:
            self._read[(gate, partition_key)] = _verdicts(self.instance, self.pipeline.key(gate), partition_key)
        return self._read[(gate, partition_key)]

    def verdict_for(self, gate: str, partition_key: str, version: str) -> Verdict | None:
        """The newest verdict on this version of the gate's subject."""
        return next((v for v in self.verdicts(gate, partition_key) if v.subject_version == version), None)

    def regenerations(self, subject: str, partition_key: str) -> int:
        """How many rejections of `subject`'s outputs (at any gate on it) asked for it to be made again."""
        return sum(
            1
            for gate in self.pipeline.gates
            if self.pipeline.gate_subject(gate.name) == subject
            for verdict in self.verdicts(gate.name, partition_key)
            if verdict.decision == "rejected" and verdict.regenerate
        )


@dataclass(frozen=True)
class ReviewState:
    """Where one gate of one variant stands."""

    pipeline: str
    gate: str
    subject_stage: str
    partition_key: str
    campaign_id: str
    # "auto" (the brief asks for none), "pending", "approved", "rejected", "regenerating"
    # (rejected, the subject being made again), "not made" (no subject yet).
    state: str
    subject: Any = None  # the subject's stored manifest (ConceptDoc, ImageArtifact, AudioArtifact...)
    version: str = ""
    verdict: Verdict | None = None  # the verdict on this version, if any
    waiting_since: float | None = None  # when this version of the subject was made
    mode: str = "auto"  # the brief's approval mode ("auto" when there is no brief yet)

    @property
    def in_review(self) -> bool:
        """The variant is the reviewers' and the approval sensor's: waiting for a verdict, stopped
        by one, or having its subject made again after one (nothing else should run it)."""
        return self.state in ("pending", "rejected", "regenerating")


# What the review app's API was written against: a pending state is a PendingReview.
PendingReview = ReviewState


def _load(manifests: ManifestReader, asset_key: dg.AssetKey, partition_key: str) -> Any:
    try:
        return manifests.load_manifest(asset_key, partition_key)
    except FileNotFoundError:
        return None


def _pipeline_keys(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[str]:
    return list(instance.get_dynamic_partitions(pipeline.partitions_name))


def review_states(
    instance: dg.DagsterInstance,
    pipelines: Mapping[str, Pipeline] | Iterable[Pipeline],
    *,
    manifests: ManifestReader,
    campaign_id: str | None = None,
    partition_keys: Sequence[str] | None = None,
) -> list[ReviewState]:
    """Every gate of every variant (of one campaign, or of the given partitions), with its state."""
    from assets.dagster_api import latest_materialization_records

    states: list[ReviewState] = []
    for pipeline in _as_list(pipelines):
        if not pipeline.gates:
            continue
        keys = _pipeline_keys(instance, pipeline) if partition_keys is None else list(partition_keys)
        if campaign_id is not None:
            keys = [key for key in keys if key.split(".", 1)[0] == campaign_id]
        registered = set(_pipeline_keys(instance, pipeline)) if partition_keys is not None else None
        keys = [key for key in keys if registered is None or key in registered]
        if not keys:
            continue
        reviews = Reviews(instance, pipeline)
        for gate in pipeline.gates:
            subject_stage = pipeline.gate_subject(gate.name)
            made_at = {
                key: record.timestamp for key, record in latest_materialization_records(instance, pipeline.key(subject_stage), keys).items()
            }
            for key in keys:
                brief = _load(manifests, pipeline.brief_key, key)
                subject = _load(manifests, pipeline.key(subject_stage), key)
                base = dict(
                    pipeline=pipeline.name, gate=gate.name, subject_stage=subject_stage, partition_key=key, campaign_id=key.split(".", 1)[0]
                )
                mode = getattr(brief, "approval", "auto")
                if brief is None or subject is None:
                    states.append(ReviewState(**base, state="not made", mode=mode))
                    continue
                version = subject_version(subject)
                verdict = reviews.verdict_for(gate.name, key, version)
                if mode != "required":
                    state = "auto"
                elif verdict is None:
                    state = "pending"
                elif verdict.decision == "approved":
                    state = "approved"
                else:
                    state = "regenerating" if verdict.regenerate else "rejected"
                states.append(
                    ReviewState(
                        **base, state=state, subject=subject, version=version, verdict=verdict, waiting_since=made_at.get(key), mode=mode
                    )
                )
    return states


def pending_reviews(
    instance: dg.DagsterInstance,
    pipelines: Mapping[str, Pipeline] | Iterable[Pipeline],
    campaign_id: str | None = None,
    *,
    manifests: ManifestReader,
) -> list[ReviewState]:
    """The gates waiting for a verdict, oldest first."""
    pending = [s for s in review_states(instance, pipelines, manifests=manifests, campaign_id=campaign_id) if s.state == "pending"]
    return sorted(pending, key=lambda s: (s.waiting_since or 0.0, s.partition_key))


def approval_state(
    instance: dg.DagsterInstance, pipelines: Mapping[str, Pipeline] | Iterable[Pipeline], partition_key: str, *, manifests: ManifestReader
) -> dict[str, str]:
    """Gate name -> its state for one variant (empty when its pipeline has no gate)."""
    return {s.gate: s.state for s in review_states(instance, pipelines, manifests=manifests, partition_keys=[partition_key])}


def record_verdict(
    instance: dg.DagsterInstance,
    pipelines: Mapping[str, Pipeline] | Iterable[Pipeline],
    partition_key: str,
    decision: str,
    reviewer: str,
    comment: str = "",
    *,
    manifests: ManifestReader,
    gate: str | None = None,
    regenerate: bool = False,
) -> Verdict:
    """Record `reviewer`'s verdict on what a gate of the variant waits for; `ReviewError` (and
    nothing recorded) when the variant is unknown or nothing of it waits."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision: {decision!r} is not one of {', '.join(DECISIONS)}")
    if not reviewer or not reviewer.strip():
        raise ReviewError("reviewer: an empty identity cannot approve or reject")
    if regenerate and decision != "rejected":
        raise ReviewError("regenerate: only a rejection sends the stage back to be made again")
    states = review_states(instance, pipelines, manifests=manifests, partition_keys=[partition_key])
    if not states:
        raise ReviewError(f"{partition_key}: no variant of a pipeline with an approval stage has this partition key")
    if gate is not None:
        states = [s for s in states if s.gate == gate]
        if not states:
            raise ReviewError(f"{partition_key}: its pipeline has no approval stage {gate!r}")
    pending = [s for s in states if s.state == "pending"]
    if not pending:
        found = ", ".join(f"{s.gate}: {s.state}" for s in states)
        raise ReviewError(f"{partition_key}: nothing waits for a verdict ({found})")
    if len(pending) > 1:
        raise ReviewError(f"{partition_key}: several approval stages wait ({', '.join(s.gate for s in pending)}); name one with --gate")
    state = pending[0]
    pipeline = next(p for p in _as_list(pipelines) if p.name == state.pipeline)
    verdict = Verdict(
        decision=decision,
        reviewer=reviewer.strip(),
        comment=comment,
        subject_version=state.version,
        regenerate=regenerate,
        timestamp=time.time(),
    )
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=pipeline.key(state.gate),
            partition=partition_key,
            description=f"{decision} by {verdict.reviewer}" + (f": {comment}" if comment else ""),
            metadata={
                VERDICT_METADATA_KEY: dg.MetadataValue.json(verdict.model_dump(mode="json")),
                "decision": decision,
                "reviewer": verdict.reviewer,
                "comment": comment,
                "subject": f"{state.subject_stage} {state.version[:12]}",
                "regenerate": regenerate,
            },
        )
    )
    return verdict


def _as_list(pipelines: Mapping[str, Pipeline] | Iterable[Pipeline]) -> list[Pipeline]:
    return list(pipelines.values()) if isinstance(pipelines, Mapping) else list(pipelines)
