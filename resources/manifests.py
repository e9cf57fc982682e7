"""The small JSON manifests that are the assets' values.

Bytes live in the artifact store; a manifest says where (URI + sha256), what
(media type, size, dimensions or duration) and how it was made (provenance).
Every manifest carries a `manifest_type` so one JSON loader reads them all.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from model_adapters.types import AspectRatio, CaptionCue, WordTiming


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RejectedAnswer(_Manifest):
    """An answer a provider gave that failed a blocking check judging answers (docs/routing.md)."""

    provider: str  # the routing config's provider id
    model: str
    seed: int | None = None
    answered: str  # what it answered, briefly (a headline, a file's type and size)
    rejected_by: tuple[str, ...]  # "check: problem" for each failed check
    cost_usd: float = 0.0
    cache_hit: bool = False


class Provenance(_Manifest):
    task: str
    provider: str
    adapter_id: str
    model: str
    model_version: str
    seed: int | None = None
    request_hash: str
    latency_s: float
    cost_usd: float = 0.0
    attempts: int = 1  # provider calls made, all providers together (0 on a cache hit)
    cache_hit: bool = False
    waited_s: float = 0.0  # backoff, Retry-After, cooldown, slot and rate-limit waits
    fallbacks: tuple[str, ...] = ()  # providers given up on before the one that answered
    errors: tuple[str, ...] = ()  # each failed attempt: provider, error class, status
    # The response cache's entry holding this answer: marked rejected when a check or a later
    # stage proves the answer unusable, so no run is served it again.
    cache_key: str | None = None
    # Answers rejected by the stage's checks before this one (quality-aware fallback).
    rejected: tuple[RejectedAnswer, ...] = ()
    # The route experiment that chose this answer's route, and the variant's arm in it
    # (docs/routing.md, "Experiments"); both None when the task ran no experiment for the variant.
    experiment: str | None = None
    experiment_arm: Literal["control", "candidate"] | None = None


class ArtifactRef(_Manifest):
    uri: str
    sha256: str
    media_type: str
    size_bytes: int


HISTORY_LIMIT = 50


class ShadowOutput(_Manifest):
    """The candidate route's output in a shadow experiment: made beside the control's for the
    same variant and inputs, stored and checked, never read by a later stage."""

    experiment: str
    # How the candidate answered (arm "candidate"); None when no provider of its route answered.
    provenance: Provenance | None = None
    # The candidate's own manifest (JSON) in the artifact store: its files are stored too.
    manifest: ArtifactRef | None = None
    tile: ArtifactRef | None = None  # its contact-sheet picture, when the stage makes one
    checks_passed: tuple[str, ...] = ()
    checks_failed: tuple[str, ...] = ()
    check_measurements: dict[str, float] = Field(default_factory=dict)
    error: str | None = None  # why the candidate made nothing (the control's output stands)


class _StageManifest(_Manifest):
    """A model stage's manifest: also what it was made from, and which checks it passed then."""

    # Hash of the stage's code version, the variant's brief, the stage's settings and the
    # content of the manifests it read (assets/reuse.py): equal means it would be made the same.
    input_fingerprint: str | None = None
    # The stage's checks that ran on it and passed when it was made.
    checks_passed: tuple[str, ...] = ()
    # The provenance of the earlier makes of this stage for the variant, oldest first (a
    # re-run appends; the newest HISTORY_LIMIT are kept).
    history: tuple[Provenance, ...] = ()
    # The numbers its checks measured when it was made, "<check>.<measure>" (on_brief.cosine,
    # speech_intelligible.word_error_rate): what the campaign report averages per arm.
    check_measurements: dict[str, float] = Field(default_factory=dict)
    # A shadow experiment's candidate output for this variant (docs/routing.md, "Experiments").
    shadow: ShadowOutput | None = None


class VariantBriefDoc(_Manifest):
    manifest_type: Literal["brief"] = "brief"
    partition_key: str
    campaign_id: str
    variant_id: str
    brief_path: str
    brief_sha256: str
    fingerprint: str
    product: str
    audience: str
    tone: str
    palette: tuple[str, ...]
    banned_terms: tuple[str, ...]
    budget_usd: float
    locale: str
    voice: str
    aspect_ratio: AspectRatio
    duration_s: float
    tier: str
    seed: int
    approval: Literal["auto", "required"] = "auto"  # the brief's: whether approval stages wait for a reviewer


class ConceptDoc(_StageManifest):
    manifest_type: Literal["concept"] = "concept"
    partition_key: str
    headline: str
    script: str
    image_prompt: str
    caption_lines: tuple[str, ...]
    word_count: int
    provenance: Provenance


class ImageArtifact(_StageManifest):
    manifest_type: Literal["image"] = "image"
    partition_key: str
    artifact: ArtifactRef
    width: int
    height: int
    aspect_ratio: AspectRatio
    provenance: Provenance
    # A JPEG, long side 360 px: the UI preview, and the campaign contact sheet's tile.
    thumbnail: ArtifactRef | None = None


class AudioArtifact(_StageManifest):
    manifest_type: Literal["audio"] = "audio"
    partition_key: str
    artifact: ArtifactRef
    duration_s: float
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    words: tuple[WordTiming, ...]
    provenance: Provenance


class CaptionTrack(_StageManifest):
    manifest_type: Literal["captions"] = "captions"
    partition_key: str
    vtt: ArtifactRef
    srt: ArtifactRef
    cues: tuple[CaptionCue, ...]
    source_audio_sha256: str


class VideoArtifact(_StageManifest):
    manifest_type: Literal["video"] = "video"
    partition_key: str
    artifact: ArtifactRef
    captions_vtt: ArtifactRef
    width: int
    height: int
    fps: int
    duration_s: float
    video_duration_s: float
    audio_duration_s: float
    drift_s: float
    provenance: Provenance


class Verdict(_Manifest):
    """A reviewer's verdict on one output of a gated stage (assets/approvals.py)."""

    decision: Literal["approved", "rejected"]
    reviewer: str  # the authenticated identity (the review app's sign-in, or the OS user of the CLI)
    comment: str = ""
    subject_version: str  # content digest of the gated stage's output it judges
    regenerate: bool = False  # a rejection that asks for the stage to be made again with a new seed
    timestamp: float


# What any stage makes (the approval kind's input slot reads any of them).
StageOutput = _StageManifest


class ApprovalDoc(_StageManifest):
    """What an approval stage passes on: the gated stage's output (by content digest) may flow on.

    Only the subject's identity is content (assets/reuse.py hashes it for the stages that read the
    gate); how it was approved (`auto`, or a reviewer's verdict) is not, so a campaign switched
    from `approval: auto` to `required` and approved does not remake what follows."""

    manifest_type: Literal["approval"] = "approval"
    partition_key: str
    subject_stage: str
    subject_version: str
    mode: Literal["auto", "required"]
    verdict: Verdict | None = None  # None when the brief asks for no approval (`auto`)


Manifest = Annotated[
    VariantBriefDoc | ConceptDoc | ImageArtifact | AudioArtifact | CaptionTrack | VideoArtifact | ApprovalDoc,
    Field(discriminator="manifest_type"),
]
MANIFEST_ADAPTER: TypeAdapter[Manifest] = TypeAdapter(Manifest)


def manifest_from_json(text: str | bytes) -> Manifest:
    return MANIFEST_ADAPTER.validate_json(text)
