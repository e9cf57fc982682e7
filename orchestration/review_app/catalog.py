"""What the review app shows, read from the instance and the stored manifests (no Dagster run).

- campaigns: the registered partitions (`<campaign>.<variant>`) of every pipeline;
- a variant: its stage manifests (through the manifest IO manager: files or
  S3), the model and cost behind each stage (provenance), the latest check
  result per check for its partition (the instance's asset check records),
  its approval state and experiment arm;
- a variant's files: every `ArtifactRef` its stored manifests name (and the
  manifests of its shadow experiments' candidates), by sha256; nothing else
  can be served;
- a campaign's experiment report: the latest `campaign_report` materialization
  of its pipeline that reported it (assets/report.py; the asset returns no
  value, so the report's JSON is found through the `<campaign>/report_file`
  metadata it records), read back from the artifact store; a campaign's own
  files are that JSON and the contact sheets it names, by sha256.

The approval gate's API (assets/approvals.py) is reached through `ReviewGate`,
so the pages can be shown, and tested, without it.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.report import CampaignReportDoc
from assets.stages import BRIEF_ASSET, REPORT_ASSET, Pipeline
from orchestration.review_app.media import artifact_refs
from resources.artifact_store import BaseArtifactStore
from resources.brief_schema import PARTITION_SEPARATOR, SLUG_PATTERN, split_partition_key
from resources.manifests import ArtifactRef, AudioArtifact, CaptionTrack, ImageArtifact, VideoArtifact, manifest_from_json

ARMS = ("control", "candidate")
# The metadata entry under which assets/report.py records a campaign's report JSON (a path, or an
# s3:// URL), and how many of the report asset's latest materializations are searched for it.
REPORT_FILE_METADATA = "{campaign}/report_file"
REPORT_HISTORY = 25
_CONTENT_NAME = re.compile(r"(?P<sha256>[0-9a-f]{64})\.json")


@dataclass(frozen=True)
class ReviewGate:
    """The approval gate's functions (assets/approvals.py), or stand-ins in tests."""

    pending_reviews: Callable[..., list[Any]]
    record_verdict: Callable[..., Any]
    approval_state: Callable[..., dict[str, str]]
    review_error: type[Exception]

    @classmethod
    def installed(cls, manifests: Any) -> ReviewGate:
        """assets/approvals.py's functions, reading the gated subjects through `manifests`."""
        from assets import approvals

        return cls(
            functools.partial(approvals.pending_reviews, manifests=manifests),
            functools.partial(approvals.record_verdict, manifests=manifests),
            functools.partial(approvals.approval_state, manifests=manifests),
            approvals.ReviewError,
        )


@dataclass(frozen=True)
class CheckView:
    name: str
    status: str  # "passed" | "failed" | "planned" | "not run"
    current: bool  # it judged the stage's latest materialization


@dataclass(frozen=True)
class StageView:
    name: str
    kind: str
    made: bool
    provider: str | None = None  # the adapter that answered
    model: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cache_hit: bool = False
    experiment: str | None = None
    arm: str | None = None
    checks: tuple[CheckView, ...] = ()
    shadow: Any = None  # a shadow experiment's candidate (ShadowOutput), if any


@dataclass(frozen=True)
class Still:
    stage: str
    image: ArtifactRef
    preview: ArtifactRef  # the thumbnail when there is one


@dataclass(frozen=True)
class VariantView:
    pipeline: str
    partition_key: str
    variant_id: str
    brief: Any  # VariantBriefDoc, or None before the brief stage ran
    stages: tuple[StageView, ...]
    video: VideoArtifact | None
    captions: ArtifactRef | None
    stills: tuple[Still, ...]
    audio: tuple[tuple[str, ArtifactRef], ...]
    approvals: Mapping[str, str]
    experiment: str | None
    arm: str | None
    shadows: tuple[tuple[str, Any], ...] = ()  # (stage, ShadowOutput)

    @property
    def cost_usd(self) -> float:
        return round(sum(stage.cost_usd for stage in self.stages), 6)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages if not stage.made)


@dataclass(frozen=True)
class CampaignSummary:
    campaign_id: str
    pipelines: tuple[str, ...]
    partition_keys: tuple[str, ...]
    pending: int | None = None  # None: no approval gate installed
    has_report: bool = False  # a campaign_report materialization reported it


@dataclass(frozen=True)
class ReportView:
    """One pipeline's latest experiment report of a campaign."""

    pipeline: str
    reported_at: float  # the materialization's timestamp
    file: ArtifactRef  # the report's JSON in the artifact store
    doc: CampaignReportDoc | None  # None: it could not be read (`error` says why)
    error: str | None = None

    @property
    def refs(self) -> tuple[ArtifactRef, ...]:
        """The files this report names: its JSON and the experiments' contact sheets (none while
        the JSON cannot be read)."""
        if self.doc is None:
            return ()
        return (self.file, *(e.contact_sheet for e in self.doc.experiments if e.contact_sheet is not None))


@dataclass
class Catalog:
    instance: dg.DagsterInstance
    pipelines: Mapping[str, Pipeline]
    artifacts: BaseArtifactStore
    manifests: Any  # a BaseManifestIOManager: load_manifest(asset_key, partition_key)
    gate: ReviewGate | None = None

    # --- campaigns and variants -------------------------------------------------------------

    def variant_keys(self, campaign_id: str | None = None) -> list[tuple[Pipeline, str]]:
        """(pipeline, partition key) of every registered variant (of one campaign)."""
        found = []
        for pipeline in self.pipelines.values():
            for key in self.instance.get_dynamic_partitions(pipeline.partitions_name):
                try:
                    campaign, _ = split_partition_key(key)
                except ValueError:
                    continue
                if campaign_id is None or campaign == campaign_id:
                    found.append((pipeline, key))
        return found

    def campaigns(self) -> list[CampaignSummary]:
        keys: dict[str, list[str]] = defaultdict(list)
        names: dict[str, set[str]] = defaultdict(set)
        for pipeline, key in self.variant_keys():
            campaign = split_partition_key(key)[0]
            keys[campaign].append(key)
            names[campaign].add(pipeline.name)
        pending_by_campaign: dict[str, int] = defaultdict(int)
        if self.gate is not None:
            for review in self.gate.pending_reviews(self.instance, self.pipelines):
                pending_by_campaign[review.campaign_id] += 1
        return [
            CampaignSummary(
                campaign,
                tuple(sorted(names[campaign])),
                tuple(sorted(keys[campaign])),
                pending_by_campaign.get(campaign, 0) if self.gate is not None else None,
                has_report=self.has_report(campaign),
            )
            for campaign in sorted(keys)
        ]

    def pipeline_of(self, partition_key: str) -> Pipeline | None:
        """The pipeline under which this variant is registered (None: not registered)."""
        try:
            split_partition_key(partition_key)
        except ValueError:
            return None
        for pipeline in self.pipelines.values():
            if self.instance.has_dynamic_partition(pipeline.partitions_name, partition_key):
                return pipeline
        return None

    def stored_manifests(self, pipeline: Pipeline, partition_key: str) -> dict[str, Any]:
        """{stage: manifest} for the stages (and the brief) stored for this variant."""
        found = {}
        for stage in (BRIEF_ASSET, *pipeline.stage_names):
            try:
                found[stage] = self.manifests.load_manifest(pipeline.key(stage), partition_key)
            except FileNotFoundError:
                continue
        return found

    def shadow_manifest(self, shadow: Any) -> Any:
        """A shadow candidate's own manifest (stored as JSON in the artifact store), or None."""
        ref = getattr(shadow, "manifest", None)
        if ref is None:
            return None
        try:
            return manifest_from_json(self.artifacts.get(ref))
        except (FileNotFoundError, ValueError):
            return None

    def served_refs(self, partition_key: str) -> dict[str, ArtifactRef]:
        """sha256 -> reference, for every file this variant's stored manifests name; for a
        campaign id (no variant), every file its experiment reports name."""
        if PARTITION_SEPARATOR not in partition_key:
            if not re.fullmatch(SLUG_PATTERN, partition_key):
                return {}
            return {ref.sha256: ref for report in self.reports(partition_key) for ref in report.refs}
        pipeline = self.pipeline_of(partition_key)
        if pipeline is None:
            return {}
        refs: dict[str, ArtifactRef] = {}
        for manifest in self.stored_manifests(pipeline, partition_key).values():
            for ref in artifact_refs(manifest):
                refs.setdefault(ref.sha256, ref)
            shadow = getattr(manifest, "shadow", None)
            if shadow is not None:
                for ref in artifact_refs(self.shadow_manifest(shadow)):
                    refs.setdefault(ref.sha256, ref)
        return refs

    # --- experiment reports ----------------------------------------------------------------------

    def _report_records(self, campaign_id: str) -> list[tuple[Pipeline, float, ArtifactRef]]:
        """(pipeline, when, the report JSON's reference) of each pipeline's latest report of the
        campaign. The reference is rebuilt from the recorded URI: its file name is the sha256 (the
        store is content-addressed), so `get` still verifies the bytes and refuses a URI outside
        the store; the size is not recorded (0 until read)."""
        entry = REPORT_FILE_METADATA.format(campaign=campaign_id)
        found = []
        for pipeline in self.pipelines.values():
            records = self.instance.fetch_materializations(pipeline.key(REPORT_ASSET), limit=REPORT_HISTORY).records
            for record in records:  # newest first
                value = record.asset_materialization.metadata.get(entry) if record.asset_materialization else None
                ref = _report_file_ref(getattr(value, "value", None))
                if ref is not None:
                    found.append((pipeline, record.timestamp, ref))
                    break
        return found

    def has_report(self, campaign_id: str) -> bool:
        return bool(self._report_records(campaign_id))

    def reports(self, campaign_id: str) -> list[ReportView]:
        """The campaign's latest experiment report per pipeline, read back from the artifact store."""
        views = []
        for pipeline, reported_at, ref in self._report_records(campaign_id):
            try:
                data = self.artifacts.get(ref)
                doc = CampaignReportDoc.model_validate_json(data)
                if doc.campaign_id != campaign_id:
                    raise ValueError(f"it reports campaign {doc.campaign_id!r}")
            except (FileNotFoundError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                views.append(ReportView(pipeline.name, reported_at, ref, None, str(exc).splitlines()[0]))
                continue
            views.append(ReportView(pipeline.name, reported_at, ref.model_copy(update={"size_bytes": len(data)}), doc))
        return views

    # --- checks -------------------------------------------------------------------------------

    def check_results(self, pipeline: Pipeline, partition_keys: Sequence[str]) -> dict[tuple[str, str, str], CheckView]:
        """(partition key, stage, check) -> the latest result of that check for that partition."""
        checks = {check.key: check for check in pipeline.checks()}
        if not checks or not partition_keys:
            return {}
        infos = self.instance.event_log_storage.get_asset_check_partition_info(list(checks), partition_keys=list(partition_keys))
        statuses = {"SUCCEEDED": "passed", "FAILED": "failed", "PLANNED": "planned"}
        found = {}
        for info in infos:
            check = checks.get(info.check_key)
            if check is None or info.partition_key is None:
                continue
            found[(info.partition_key, check.stage, check.name)] = CheckView(
                check.name, statuses.get(info.latest_execution_status.value, info.latest_execution_status.value.lower()), info.is_current
            )
        return found

    # --- the gallery ----------------------------------------------------------------------------

    def variants(self, campaign_id: str) -> list[VariantView]:
        views = []
        by_pipeline: dict[str, list[str]] = defaultdict(list)
        for pipeline, key in self.variant_keys(campaign_id):
            by_pipeline[pipeline.name].append(key)
        for name, keys in sorted(by_pipeline.items()):
            pipeline = self.pipelines[name]
            results = self.check_results(pipeline, keys)
            for key in sorted(keys):
                views.append(self.variant(pipeline, key, results))
        return views

    def variant(self, pipeline: Pipeline, partition_key: str, results: Mapping[tuple[str, str, str], CheckView]) -> VariantView:
        manifests = self.stored_manifests(pipeline, partition_key)
        stages, stills, audio, shadows = [], [], [], []
        video = captions = None
        experiment = arm = None
        for stage in pipeline.stages:
            manifest = manifests.get(stage.name)
            checks = tuple(results.get((partition_key, stage.name, name), CheckView(name, "not run", False)) for name, _, _ in stage.checks)
            provenance = getattr(manifest, "provenance", None)
            stage_arm = getattr(provenance, "experiment_arm", None) or getattr(provenance, "arm", None)
            stage_experiment = getattr(provenance, "experiment", None)
            if stage_arm and arm is None:
                experiment, arm = stage_experiment, stage_arm
            shadow = getattr(manifest, "shadow", None)
            if shadow is not None:
                shadows.append((stage.name, shadow))
            stages.append(
                StageView(
                    name=stage.name,
                    kind=stage.kind.name,
                    made=manifest is not None,
                    provider=getattr(provenance, "adapter_id", None),
                    model=f"{provenance.model}@{provenance.model_version}" if provenance is not None else None,
                    cost_usd=getattr(provenance, "cost_usd", 0.0) or 0.0,
                    latency_s=getattr(provenance, "latency_s", 0.0) or 0.0,
                    cache_hit=bool(getattr(provenance, "cache_hit", False)),
                    experiment=stage_experiment,
                    arm=stage_arm,
                    checks=checks,
                    shadow=shadow,
                )
            )
            if isinstance(manifest, VideoArtifact):
                video, captions = manifest, manifest.captions_vtt
            elif isinstance(manifest, CaptionTrack) and captions is None:
                captions = manifest.vtt
            elif isinstance(manifest, ImageArtifact):
                stills.append(Still(stage.name, manifest.artifact, manifest.thumbnail or manifest.artifact))
            elif isinstance(manifest, AudioArtifact):
                audio.append((stage.name, manifest.artifact))
        approvals = self.gate.approval_state(self.instance, self.pipelines, partition_key) if self.gate is not None else {}
        return VariantView(
            pipeline=pipeline.name,
            partition_key=partition_key,
            variant_id=split_partition_key(partition_key)[1],
            brief=manifests.get(BRIEF_ASSET),
            stages=tuple(stages),
            video=video,
            captions=captions,
            stills=tuple(stills),
            audio=tuple(audio),
            approvals=dict(approvals),
            experiment=experiment,
            arm=arm,
            shadows=tuple(shadows),
        )

    def pending(self, campaign_id: str) -> list[Any]:
        if self.gate is None:
            return []
        return list(self.gate.pending_reviews(self.instance, self.pipelines, campaign_id))


def _report_file_ref(value: Any) -> ArtifactRef | None:
    """The report JSON's reference from its metadata value (a local path or a URL), or None."""
    if not isinstance(value, str) or not value:
        return None
    uri = value if "://" in value else "file://" + value  # assets/rollup.py `_uri_metadata` strips "file://"
    match = _CONTENT_NAME.fullmatch(uri.rsplit("/", 1)[-1])
    if match is None:
        return None
    return ArtifactRef(uri=uri, sha256=match["sha256"], media_type="application/json", size_bytes=0)
