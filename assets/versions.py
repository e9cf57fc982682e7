"""Versions of a stage's output for a variant, as the event log records them: which is current, which is pinned.

Every materialization of a stage names the manifest version it wrote
(`manifest_versions`: partition key -> sha256 of the JSON, kept forever beside
the artifacts; resources/io_manager.py). Three kinds of materialization:

- a *make*: the stage made (or re-made) its output;
- a *reuse*: a run found nothing changed and recorded the stored output again,
  with the metadata of the materialization it repeats (`reused: true`);
- a *pin* or *unpin* (`version_action`): `studio pin` wrote a kept version back
  as the current manifest, `studio unpin` the latest made one
  (orchestration/history.py). Reported through the instance, not by a run.

A variant's stage is *pinned* while its latest materialization carries
`pinned_version`: the pin itself, or a reuse repeating it (the pinned output
stands in every later run: assets/reuse.py). A make (`force`) or an unpin ends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.dagster_api import latest_materialization_records
from assets.stages import Pipeline
from resources.io_manager import MANIFEST_VERSIONS_METADATA_KEY

VERSION_ACTION_KEY = "version_action"  # "pin" | "unpin"
PINNED_VERSION_KEY = "pinned_version"
PINNED_BY_KEY = "pinned_by"
UNPINNED_VERSION_KEY = "unpinned_version"
PIN, UNPIN = "pin", "unpin"


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def recorded_version(metadata: Mapping[str, Any], partition_key: str) -> str | None:
    """The manifest version a materialization of `partition_key` recorded (None before versions were kept)."""
    versions = _value(metadata, MANIFEST_VERSIONS_METADATA_KEY)
    version = versions.get(partition_key) if isinstance(versions, Mapping) else None
    return version if isinstance(version, str) else None


def pinned_version(metadata: Mapping[str, Any]) -> str | None:
    """The version a pin holds, when this materialization is a pin or repeats one."""
    version = _value(metadata, PINNED_VERSION_KEY)
    return version if isinstance(version, str) and version else None


def version_action(metadata: Mapping[str, Any]) -> str | None:
    action = _value(metadata, VERSION_ACTION_KEY)
    return action if action in (PIN, UNPIN) else None


def is_reused(metadata: Mapping[str, Any]) -> bool:
    return _value(metadata, "reused") is True


def is_made(metadata: Mapping[str, Any]) -> bool:
    """A materialization of an output the stage made (not a reuse, not a pin or unpin)."""
    return not is_reused(metadata) and version_action(metadata) is None


@dataclass(frozen=True)
class CurrentVersion:
    version: str | None  # None: recorded before versions were kept
    pinned: bool
    approval: str | None = None  # the state of an approval stage judging it, if the pipeline has one


def current_versions(
    instance: dg.DagsterInstance, pipeline: Pipeline, partition_keys: Sequence[str]
) -> dict[str, dict[str, CurrentVersion]]:
    """stage -> partition key -> its current version (the latest materialization's) and pin."""
    found: dict[str, dict[str, CurrentVersion]] = {}
    for stage in pipeline.stage_names:
        records = latest_materialization_records(instance, pipeline.key(stage), list(partition_keys))
        found[stage] = {}
        for key, record in records.items():
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            found[stage][key] = CurrentVersion(recorded_version(metadata, key), pinned_version(metadata) is not None)
    return found


def approval_states(
    instance: dg.DagsterInstance, pipeline: Pipeline, partition_keys: Sequence[str], manifests: Any
) -> dict[tuple[str, str], str]:
    """(stage, partition key) -> the state of the approval stage judging that stage's current output
    ("auto", "pending", "approved", "rejected", ...), and the approval stage's own; empty when the
    pipeline has no approval stage."""
    if not getattr(pipeline, "gates", ()) or not partition_keys:
        return {}
    from assets.approvals import review_states  # only pipelines with approval stages need it

    states: dict[tuple[str, str], str] = {}
    for state in review_states(instance, [pipeline], manifests=manifests, partition_keys=list(partition_keys)):
        states[(state.subject_stage, state.partition_key)] = state.state
        states[(state.gate, state.partition_key)] = state.state
    return states
