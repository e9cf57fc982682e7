"""`studio history`, `studio pin`, `studio unpin`: every version of a variant's stage outputs, and a way back to one.

What a version is, and how a pin is recorded: assets/versions.py. Here:

- `stage_history`: one stage's versions for one variant, newest first, from
  the event log: when it was made, provider and model, cost (the metadata of
  the materialization that made it), its check verdicts (the evaluations of
  that materialization), the approval verdict on it where an approval stage
  judges the stage; the current version (the stored manifest's) and the
  pinned one marked, and the pins and unpins so far.
- `pin`: write a kept version back as the current manifest, byte for byte,
  and report a materialization that says so (`version_action: pin`, the
  version, who: `$USER`) carrying the metadata of the materialization that
  made it (the UI shows its preview, model and cost). Refused, with nothing
  written, for a version whose files are gone or that failed a blocking check.
- `unpin`: the same for the latest version a run made (`version_action: unpin`).

What follows a pin: it is a new materialization of the stage, so the
automation sensor (`studio_automation`, eager: orchestration/definitions.py)
requests the stages that read it, and the roll-up, for that variant on its
next tick; their input changed, so they are made again (from the response
cache when they were made from that version before). Without the sensor
running, launch the pipeline's job from the next stage for the variant (e.g.
`regenerate_video`). The pin then holds in every later run: assets/reuse.py
keeps a pinned output whatever its inputs are now, so `regenerate_images`
leaves a pinned refined image as it is; `force` remakes it, which ends the pin.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets.dagster_api import check_verdicts_by_target
from assets.reuse import artifact_refs
from assets.stages import Pipeline
from assets.versions import (
    PIN,
    PINNED_BY_KEY,
    PINNED_VERSION_KEY,
    UNPIN,
    UNPINNED_VERSION_KEY,
    VERSION_ACTION_KEY,
    is_made,
    pinned_version,
    recorded_version,
    version_action,
)
from orchestration.environment import StudioEnvironment, studio_environment
from resources.io_manager import MANIFEST_VERSIONS_METADATA_KEY, BaseManifestIOManager

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
SHORT = 12  # characters of a version id shown (any unique prefix is accepted back)
MIN_PREFIX = 6

# Metadata of a make that a pin or unpin does not repeat: they say what this record is.
_OWN_KEYS = {
    MANIFEST_VERSIONS_METADATA_KEY,
    "reused",
    VERSION_ACTION_KEY,
    PINNED_VERSION_KEY,
    PINNED_BY_KEY,
    UNPINNED_VERSION_KEY,
    "pinned_over",
}


class HistoryError(ValueError):
    """An unknown variant, stage or version: nothing was recorded (exit 2)."""


class PinRefused(RuntimeError):
    """The version cannot stand as the current one (its files are gone, it failed a blocking
    check): nothing was recorded (exit 1)."""


@dataclass(frozen=True)
class VersionRow:
    version: str
    made_at: float  # when a run first made it
    run_id: str
    provider: str | None
    model: str | None
    cost_usd: float | None
    checks: Mapping[str, bool | None]  # check -> passed (None: no evaluation recorded)
    approval: str | None  # the approval stage's verdict on it, where one judges the stage
    current: bool
    pinned: bool
    made_metadata: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class VersionEvent:
    action: str  # "pin" | "unpin"
    version: str  # pin: the version pinned; unpin: the version it returned to
    at: float
    by: str | None
    previous: str | None  # pin: the version it replaced; unpin: the version that was pinned


@dataclass(frozen=True)
class StageHistory:
    pipeline: str
    stage: str
    partition_key: str
    rows: tuple[VersionRow, ...]  # newest first
    events: tuple[VersionEvent, ...]  # newest first
    current: str | None  # the stored manifest's version
    pinned: str | None
    latest_made: str | None  # the version of the newest materialization that made one
    unversioned: int  # materializations recorded before versions were kept

    def find(self, prefix: str) -> VersionRow:
        prefix = prefix.strip().lower()
        if len(prefix) < MIN_PREFIX:
            raise HistoryError(f"--version: {prefix!r} is too short; give at least {MIN_PREFIX} characters of a version id")
        matches = [row for row in self.rows if row.version.startswith(prefix)]
        if not matches:
            known = ", ".join(row.version[:SHORT] for row in self.rows) or "none"
            raise HistoryError(f"{self.partition_key}: {self.stage} has no version {prefix!r} (versions: {known})")
        if len(matches) > 1:
            raise HistoryError(f"--version: {prefix!r} matches {len(matches)} versions of {self.stage}; give more characters")
        return matches[0]


# --- reading -------------------------------------------------------------------------


def resolve_pipeline(instance: dg.DagsterInstance, pipelines: Mapping[str, Pipeline], partition_key: str) -> Pipeline:
    """The pipeline whose partitions hold this variant; HistoryError if none does."""
    matches = [p for p in pipelines.values() if partition_key in set(instance.get_dynamic_partitions(p.partitions_name))]
    if not matches:
        raise HistoryError(
            f"{partition_key}: no such variant on this Dagster instance (give campaign.variant, as `studio campaign add` printed it)"
        )
    if len(matches) > 1:  # pipelines sharing a partition set: the one that made the variant's brief
        made = [
            p
            for p in matches
            if instance.fetch_materializations(dg.AssetRecordsFilter(p.brief_key, asset_partitions=[partition_key]), limit=1).records
        ]
        matches = made or matches
    return matches[0]


def resolve_stage(pipeline: Pipeline, partition_key: str, stage: str) -> str:
    if stage not in pipeline.stage_names:
        raise HistoryError(
            f"--stage: {partition_key}'s pipeline {pipeline.name!r} has no stage {stage!r}; its stages: {', '.join(pipeline.stage_names)}"
        )
    return stage


def _records(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str) -> list[Any]:
    """Every materialization of one partition, oldest first."""
    found, cursor = [], None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=500, cursor=cursor, ascending=True
        )
        found.extend(result.records)
        if not result.has_more:
            return found
        cursor = result.cursor


def _meta(record: Any) -> Mapping[str, Any]:
    return record.asset_materialization.metadata if record.asset_materialization is not None else {}


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _approvals(
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    stage: str,
    partition_key: str,
    versions: Sequence[str],
    manifests: BaseManifestIOManager,
) -> dict[str, str]:
    """version -> the approval verdict on it, where an approval stage judges `stage` (or `stage`
    is one); empty otherwise. Read through assets/approvals.py, only for pipelines with gates."""
    gates = getattr(pipeline, "gates", ())
    judged_by = [gate.name for gate in gates if pipeline.gate_subject(gate.name) == stage]
    is_gate = any(gate.name == stage for gate in gates)
    if not judged_by and not is_gate:
        return {}
    from assets.approvals import Reviews, subject_version

    try:
        mode = getattr(manifests.load_manifest(pipeline.brief_key, partition_key), "approval", "auto")
    except FileNotFoundError:
        mode = "auto"
    reviews, found = Reviews(instance, pipeline), {}
    for version in versions:
        try:
            manifest = manifests.load_version(version)
        except (FileNotFoundError, ValueError):
            continue
        if is_gate:
            verdict = getattr(manifest, "verdict", None)
            found[version] = verdict.decision if verdict is not None else str(getattr(manifest, "mode", "auto"))
            continue
        decisions = [v.decision for gate in judged_by if (v := reviews.verdict_for(gate, partition_key, subject_version(manifest)))]
        found[version] = decisions[0] if decisions else ("auto" if mode != "required" else "pending")
    return found


def stage_history(
    instance: dg.DagsterInstance, pipeline: Pipeline, stage: str, partition_key: str, manifests: BaseManifestIOManager
) -> StageHistory:
    records = _records(instance, pipeline.key(stage), partition_key)
    checks = [check for check in pipeline.checks() if check.stage == stage]
    verdicts = {check.name: check_verdicts_by_target(instance, check.key, partition_key) for check in checks}

    makes: dict[str, list[Any]] = {}  # version -> the materializations that made it, oldest first
    events, unversioned, latest_made = [], 0, None
    for record in records:
        metadata = _meta(record)
        version = recorded_version(metadata, partition_key)
        action = version_action(metadata)
        if is_made(metadata):
            if version is None:
                unversioned += 1
                continue
            makes.setdefault(version, []).append(record)
            latest_made = version
        elif action is not None and _value(metadata, "reused") is not True and version is not None:
            previous = _value(metadata, "pinned_over") if action == PIN else _value(metadata, UNPINNED_VERSION_KEY)
            events.append(VersionEvent(action, version, record.timestamp, _value(metadata, PINNED_BY_KEY), previous))

    pinned = pinned_version(_meta(records[-1])) if records else None
    try:
        current = manifests.current_version(pipeline.key(stage), partition_key)
    except FileNotFoundError:
        current = None
    approvals = _approvals(instance, pipeline, stage, partition_key, list(makes), manifests)

    rows = []
    for version, made in makes.items():
        first, newest = made[0], made[-1]
        metadata = _meta(newest)
        judged = {
            name: next((by_target[r.storage_id] for r in reversed(made) if r.storage_id in by_target), None)
            for name, by_target in verdicts.items()
        }
        cost = _value(metadata, "cost_usd")
        rows.append(
            VersionRow(
                version=version,
                made_at=first.timestamp,
                run_id=first.run_id,
                provider=_value(metadata, "provider"),
                model=_value(metadata, "model"),
                cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
                checks=judged,
                approval=approvals.get(version),
                current=version == current,
                pinned=version == pinned,
                made_metadata=metadata,
            )
        )
    rows.sort(key=lambda row: row.made_at, reverse=True)
    return StageHistory(
        pipeline.name, stage, partition_key, tuple(rows), tuple(reversed(events)), current, pinned, latest_made, unversioned
    )


# --- pin and unpin -------------------------------------------------------------------


def downstream_of(pipeline: Pipeline, stage: str) -> list[str]:
    """The stages that read `stage`, directly or not, in pipeline order."""
    found = {stage}
    for candidate in pipeline.stages:
        if found & set(candidate.inputs.values()):
            found.add(candidate.name)
    return [name for name in pipeline.stage_names if name in found and name != stage]


def _report(
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    stage: str,
    partition_key: str,
    row: VersionRow,
    action: str,
    description: str,
    extra: Mapping[str, Any],
) -> None:
    """A materialization of the stage for the variant: the made version's metadata, and what this is."""
    metadata = {key: value for key, value in row.made_metadata.items() if key not in _OWN_KEYS}
    metadata.update(
        {
            MANIFEST_VERSIONS_METADATA_KEY: dg.MetadataValue.json({partition_key: row.version}),
            "reused": False,
            VERSION_ACTION_KEY: action,
            **extra,
        }
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=pipeline.key(stage), partition=partition_key, description=description, metadata=metadata)
    )


def _check_can_stand(pipeline: Pipeline, stage: str, row: VersionRow, manifests: BaseManifestIOManager, artifacts: Any) -> None:
    failed = [check.name for check in pipeline.checks() if check.stage == stage and check.blocking and row.checks.get(check.name) is False]
    if failed:
        raise PinRefused(
            f"{stage} version {row.version[:SHORT]} failed blocking check(s) {', '.join(failed)}; it cannot be the current one"
        )
    try:
        manifest = manifests.load_version(row.version)
    except (FileNotFoundError, ValueError) as exc:
        raise PinRefused(f"{stage} version {row.version[:SHORT]}: {exc}") from None
    missing = [ref.uri for ref in artifact_refs(manifest) if not artifacts.holds(ref)]
    if missing:
        raise PinRefused(f"{stage} version {row.version[:SHORT]}: its files are missing from the artifact store: {', '.join(missing)}")


def current_user() -> str:
    return os.environ.get("USER") or getpass.getuser()


def pin(
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    stage: str,
    partition_key: str,
    version: str,
    manifests: BaseManifestIOManager,
    artifacts: Any,
    user: str | None = None,
) -> tuple[VersionRow, bool]:
    """Make a kept version the current one; (its row, whether anything was recorded)."""
    history = stage_history(instance, pipeline, stage, partition_key, manifests)
    row = history.find(version)
    if history.pinned == row.version and history.current == row.version:
        return row, False
    _check_can_stand(pipeline, stage, row, manifests, artifacts)
    manifests.restore_version(pipeline.key(stage), partition_key, row.version)
    by = user or current_user()
    _report(
        instance,
        pipeline,
        stage,
        partition_key,
        row,
        PIN,
        f"pinned version {row.version[:SHORT]} by {by}",
        {PINNED_VERSION_KEY: row.version, PINNED_BY_KEY: by, "pinned_over": history.current or ""},
    )
    return row, True


def unpin(
    instance: dg.DagsterInstance,
    pipeline: Pipeline,
    stage: str,
    partition_key: str,
    manifests: BaseManifestIOManager,
    artifacts: Any,
    user: str | None = None,
) -> tuple[VersionRow | None, bool]:
    """Return to the latest made version; (its row, whether anything was recorded: not when nothing was pinned)."""
    history = stage_history(instance, pipeline, stage, partition_key, manifests)
    if history.pinned is None:
        return None, False
    if history.latest_made is None:
        raise PinRefused(f"{partition_key}: {stage} has no made version to return to")
    row = next(r for r in history.rows if r.version == history.latest_made)
    _check_can_stand(pipeline, stage, row, manifests, artifacts)
    manifests.restore_version(pipeline.key(stage), partition_key, row.version)
    by = user or current_user()
    _report(
        instance,
        pipeline,
        stage,
        partition_key,
        row,
        UNPIN,
        f"unpinned {history.pinned[:SHORT]} by {by}: back to {row.version[:SHORT]}",
        {UNPINNED_VERSION_KEY: history.pinned, PINNED_BY_KEY: by},
    )
    return row, True


# --- the commands --------------------------------------------------------------------


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _checks_text(checks: Mapping[str, bool | None]) -> str:
    return " ".join(f"{name}:{'pass' if ok else 'FAIL' if ok is False else '-'}" for name, ok in checks.items()) or "-"


def history_lines(history: StageHistory) -> list[str]:
    marks = [f"current {history.current[:SHORT]}" if history.current else "nothing stored"]
    if history.pinned:
        marks.append(f"pinned {history.pinned[:SHORT]}")
    lines = [f"{history.partition_key} {history.stage} (pipeline {history.pipeline}): {len(history.rows)} version(s); {', '.join(marks)}"]
    if history.rows:
        lines.append(f"  {'':2}{'VERSION':<{SHORT}}  {'MADE (UTC)':<19}  {'PROVIDER / MODEL':<36}  {'COST':>9}  {'APPROVAL':<9}  CHECKS")
    for row in history.rows:
        mark = ("*" if row.current else " ") + ("P" if row.pinned else " ")
        model = " / ".join(str(part) for part in (row.provider, row.model) if part) or "-"
        cost = f"${row.cost_usd:.4f}" if row.cost_usd is not None else "-"
        lines.append(
            f"  {mark}{row.version[:SHORT]:<{SHORT}}  {_when(row.made_at)}  {model[:36]:<36}  {cost:>9}  {row.approval or '-':<9}  {_checks_text(row.checks)}"
        )
    for event in history.events:
        if event.action == PIN:
            lines.append(
                f"  pinned {event.version[:SHORT]} at {_when(event.at)} by {event.by or '?'}"
                + (f" (over {event.previous[:SHORT]})" if event.previous else "")
            )
        else:
            lines.append(
                f"  unpinned {(event.previous or '?')[:SHORT]} at {_when(event.at)} by {event.by or '?'}: back to {event.version[:SHORT]}"
            )
    if history.unversioned:
        lines.append(f"  ({history.unversioned} earlier make(s) recorded before manifest versions were kept: not listed)")
    if history.rows:
        lines.append("  (* current, P pinned)")
    return lines


def _run(action: Any) -> int:
    try:
        with studio_environment() as studio:
            return action(studio)
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except PinRefused as exc:
        print(f"error: refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # the routing config or a pipeline file, or STUDIO_ENV
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID


def history_command(args: argparse.Namespace) -> int:
    def action(studio: StudioEnvironment) -> int:
        pipeline = resolve_pipeline(studio.instance, studio.pipelines, args.variant)
        stages = [resolve_stage(pipeline, args.variant, args.stage)] if args.stage else list(pipeline.stage_names)
        for index, stage in enumerate(stages):
            if index:
                print()
            print("\n".join(history_lines(stage_history(studio.instance, pipeline, stage, args.variant, studio.manifests))))
        return EXIT_OK

    return _run(action)


def _follow_up(pipeline: Pipeline, stage: str) -> str:
    following = downstream_of(pipeline, stage)
    if not following:
        return "the roll-up follows on the automation sensor's next tick (studio_automation)"
    return (
        f"{', '.join(following)} and the roll-up follow on the automation sensor's next tick (studio_automation), "
        "or run the pipeline's job from the next stage for this variant"
    )


def pin_command(args: argparse.Namespace) -> int:
    def action(studio: StudioEnvironment) -> int:
        pipeline = resolve_pipeline(studio.instance, studio.pipelines, args.variant)
        stage = resolve_stage(pipeline, args.variant, args.stage)
        row, recorded = pin(studio.instance, pipeline, stage, args.variant, args.version, studio.manifests, studio.artifacts)
        if not recorded:
            print(f"{args.variant} {stage}: version {row.version[:SHORT]} is already pinned and current; nothing recorded")
            return EXIT_OK
        print(f"{args.variant} {stage}: pinned version {row.version[:SHORT]} (made {_when(row.made_at)} UTC) as the current one")
        print(_follow_up(pipeline, stage))
        return EXIT_OK

    return _run(action)


def unpin_command(args: argparse.Namespace) -> int:
    def action(studio: StudioEnvironment) -> int:
        pipeline = resolve_pipeline(studio.instance, studio.pipelines, args.variant)
        stage = resolve_stage(pipeline, args.variant, args.stage)
        row, recorded = unpin(studio.instance, pipeline, stage, args.variant, studio.manifests, studio.artifacts)
        if not recorded:
            print(f"{args.variant} {stage}: not pinned; nothing recorded")
            return EXIT_OK
        print(f"{args.variant} {stage}: unpinned; back to the latest made version {row.version[:SHORT]}")
        print(_follow_up(pipeline, stage))
        return EXIT_OK

    return _run(action)
