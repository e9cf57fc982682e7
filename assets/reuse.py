"""Unchanged stages are not made, checked or recorded again.

A stage's output for a variant depends on the stage's code version (with its
model route's identity), the variant's brief, the stage's settings and the
content of the manifests it reads. Their hash is the stage's *input
fingerprint*; it is stored in the manifest and in the materialization's
metadata. When a run asks for a stage whose fingerprint is unchanged, and

- Dagster's latest materialization of that partition recorded the same
  fingerprint (a new Dagster home, or a materialization since, means no),
- the stored manifest has it too, its files are all in the artifact store,
- every check selected for the stage passed when it was made,
- and no later stage proved the answer it holds broken (its response-cache
  entry is marked rejected),

the stored manifest is used as it is: no provider call, no check. A pinned
output (`studio pin`) stands whatever its inputs are now (only its files
must be there and its answer not proved broken): regenerating a pinned stage
keeps the pin; `force` or `studio unpin` ends it. It is still
recorded (assets/recorder.py): a materialization marked `reused` with the
metadata of the one it repeats, so a run or backfill of an unchanged
partition ends green. The `force` setting of the model step makes everything
again (from the response cache where the routing allows it; never an answer
marked rejected there).
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.dagster_api import latest_materialization_records
from assets.stages import Pipeline, StageCheck
from assets.versions import pinned_version
from resources.artifact_store import BaseArtifactStore
from resources.manifests import ArtifactRef, Manifest, VariantBriefDoc
from resources.policies.cache import ResponseCache

FINGERPRINT_METADATA_KEY = "input_fingerprint"
# What a manifest holds besides its content: how it was made and what it was made from (and, for
# a shadow experiment, the candidate's output beside it: nothing downstream is made from it).
_NOT_CONTENT = {"provenance", "input_fingerprint", "checks_passed", "history", "check_measurements", "shadow", "mode", "verdict"}


def content_digest(manifest: Manifest) -> str:
    """Hash of what a manifest says about its output (files, text, timings), not how it was
    made: a cache hit and a fresh call for the same output digest the same."""
    payload = manifest.model_dump(mode="json", exclude=_NOT_CONTENT)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def input_fingerprint(
    stage: str, code_version: str, brief: VariantBriefDoc, settings: Any, inputs: Mapping[str, Manifest], extra: Any = None
) -> str:
    """`settings`: the stage's own settings (a pydantic model); `inputs`: its input slots' manifests;
    `extra`: what else of the brief the stage's kind depends on (its `fingerprint_extra`)."""
    payload = {
        "stage": stage,
        "code_version": code_version,
        "brief": brief.fingerprint,
        "seed": brief.seed,
        "settings": settings.model_dump(mode="json") if settings is not None else None,
        "inputs": {name: content_digest(manifest) for name, manifest in sorted(inputs.items())},
    }
    if extra is not None:  # absent otherwise, so the fingerprints recorded before it stay valid
        payload["extra"] = extra
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def artifact_refs(manifest: Manifest) -> list[ArtifactRef]:
    return [value for value in (getattr(manifest, name) for name in type(manifest).model_fields) if isinstance(value, ArtifactRef)]


@dataclass(frozen=True)
class RecordedMaterialization:
    fingerprint: str | None
    metadata: Mapping[str, Any]


def latest_recorded(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Sequence[str]
) -> dict[str, RecordedMaterialization]:
    """partition key -> its latest materialization's fingerprint and metadata."""
    found = {}
    for key, record in latest_materialization_records(instance, asset_key, partition_keys).items():
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        found[key] = RecordedMaterialization(getattr(metadata.get(FINGERPRINT_METADATA_KEY), "value", None), metadata)
    return found


@dataclass
class ReusePlan:
    """What the run may reuse: Dagster's latest materializations of the selected stages, and
    the checks selected for each."""

    recorded: Mapping[str, Mapping[str, RecordedMaterialization]]
    checks_by_stage: Mapping[str, frozenset[str]]
    load_stored: Callable[[str, str], Manifest]
    artifacts: BaseArtifactStore
    reused: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def for_run(
        cls,
        instance: dg.DagsterInstance,
        pipeline: Pipeline,
        stages: Iterable[str],
        partition_keys: Sequence[str],
        checks: Iterable[StageCheck],
        load_stored: Callable[[str, str], Manifest],
        artifacts: BaseArtifactStore,
    ) -> "ReusePlan":
        stages, checks = list(stages), list(checks)
        return cls(
            recorded={stage: latest_recorded(instance, pipeline.key(stage), partition_keys) for stage in stages},
            checks_by_stage={stage: frozenset(c.name for c in checks if c.stage == stage) for stage in stages},
            load_stored=load_stored,
            artifacts=artifacts,
        )

    def stored_if_unchanged(self, stage: str, key: str, fingerprint: str) -> Manifest | None:
        """The stored manifest, when it can stand for what this run would make; else None."""
        recorded = self.recorded.get(stage, {}).get(key)
        # A pinned output (`studio pin`, assets/versions.py) stands whatever its inputs are now,
        # until `studio unpin` or a forced remake: what it was made from is its own fingerprint,
        # and a person chose it over its checks' verdicts.
        pinned = recorded is not None and pinned_version(recorded.metadata) is not None
        if pinned:
            fingerprint = recorded.fingerprint
        if recorded is None or recorded.fingerprint != fingerprint:
            return None
        try:
            stored = self.load_stored(stage, key)
        except Exception:  # missing or unreadable: made again (and stored over)
            return None
        if stored.input_fingerprint != fingerprint:
            return None
        if not pinned and not self.checks_by_stage.get(stage, frozenset()) <= set(stored.checks_passed):
            return None
        if not all(self.artifacts.holds(ref) for ref in artifact_refs(stored)):
            return None
        provenance = getattr(stored, "provenance", None)
        if provenance is not None and provenance.cache_key and ResponseCache(self.artifacts).is_rejected(provenance.cache_key):
            return None  # a later stage proved the answer broken (assets/stages.py, BrokenInput)
        self.reused.setdefault(stage, set()).add(key)
        return stored

    def reused_keys(self, stage: str) -> set[str]:
        return self.reused.get(stage, set())
