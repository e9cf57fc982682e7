"""`variant_media`: every model stage of a variant as one subsettable multi-asset.

Why one step and not one per stage: Dagster starts a step only when the step
before it has finished for every partition of the run, so with one asset per
step a 64-variant backfill waits for the slowest concept before the first
image starts, and the providers of later stages sit idle while earlier ones
work. Here each variant goes through its stages as soon as its inputs are
ready (concept, then image -> refine beside voice -> captions, then video),
all variants at once, bounded only by each provider's concurrency limit: the
stages pipeline.

What stays per asset: each stage is its own asset (spec, code version,
automation condition, checks, lineage edges, one materialization per
partition with its metadata, one JSON manifest per partition). The step is
subsettable: a job or automation that selects some stages runs only those,
reading the others' stored manifests (e.g. `regenerate_video` re-runs only
the video).

Blocking checks gate the pipeline. The checks themselves are separate check
steps (assets/checks.py) that run after this step and record one evaluation
per partition; a blocking check would stop downstream *steps*, but a
variant's later stages are in this same step. So the pure functions of the
blocking checks also run here, as gates right after each stage: a variant
whose voiceover fails the loudness check, say, is not captioned or composited.
The gated stage's own output is materialized, its check step records the
failure and fails the run; the stages it stopped are not materialized.

A variant that fails at a stage (a provider error, a broken response) skips
what follows it for that variant; the other variants go on. At the end every
stage that succeeded for all the run's variants is materialized, and the step
fails naming each failed variant, stage and error (its stored calls are
response-cache hits on the retry).
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from assets.captions import CAPTIONS
from assets.checks import CheckOutcome, caption_text, check_banned_terms, check_captions, check_loudness, check_semantic_alignment
from assets.common import FOLLOW_UPSTREAM, MANIFEST_IO_MANAGER_KEY, STUDIO_OWNERS, TORCH_POOL
from assets.concept import CONCEPT
from assets.images import DRAFT_IMAGE, REFINED_IMAGE
from assets.partitions import variant_partitions
from assets.stages import Stage, StageCall, VariantMediaSettings
from assets.video import SYNCED_VIDEO
from assets.voiceover import VOICEOVER
from resources.artifact_store import BaseArtifactStore
from model_adapters.captions import parse_webvtt
from resources.manifests import AudioArtifact, CaptionTrack, ConceptDoc, Manifest, VariantBriefDoc
from resources.model_router import ModelRouter

# In dependency order.
STAGES: tuple[Stage, ...] = (CONCEPT, DRAFT_IMAGE, REFINED_IMAGE, VOICEOVER, CAPTIONS, SYNCED_VIDEO)
STAGES_BY_NAME = {stage.name: stage for stage in STAGES}
VARIANT_MEDIA_STEP = "variant_media"


class UpstreamFailed(RuntimeError):
    """A stage not run for a variant because a stage it reads failed."""


class GateFailed(RuntimeError):
    """A stage's output failed one of its blocking checks: what reads it is not made."""


# --- gates: the blocking checks' measurements, run right after the stage --------------------


def _concept_gates(call: StageCall, doc: ConceptDoc) -> dict[str, CheckOutcome]:
    spec = call.spec
    texts = {"headline": doc.headline, "script": doc.script, "image_prompt": doc.image_prompt}
    return {
        "no_banned_terms": check_banned_terms(texts, spec.banned_terms),
        "on_brief": check_semantic_alignment(doc.script, spec.product, spec.audience, spec.tone),
    }


def _voiceover_gates(call: StageCall, audio: AudioArtifact) -> dict[str, CheckOutcome]:
    return {"loudness_within_spec": check_loudness(call.artifacts.get(audio.artifact))}


def _captions_gates(call: StageCall, track: CaptionTrack) -> dict[str, CheckOutcome]:
    words = call.inputs["voiceover"].words
    texts = {name: call.artifacts.get(ref).decode("utf-8") for name, ref in (("vtt", track.vtt), ("srt", track.srt))}
    rules = {name: check_captions(text, words) for name, text in texts.items()}
    problems = [f"{name}: {problem}" for name, outcome in rules.items() for problem in outcome.metadata["problems"]]
    spoken = {name: caption_text(parse_webvtt(text)) for name, text in texts.items()}
    return {
        "caption_rules": CheckOutcome(not problems, {"problems": problems}),
        "no_banned_terms": check_banned_terms(spoken, call.spec.banned_terms),
    }


# Image stages validate their PNGs inside the stage (decode, size, aspect
# ratio): the same measurement as `png_valid`. The video is last: no gate.
GATES: dict[str, Any] = {"concept": _concept_gates, "voiceover": _voiceover_gates, "captions": _captions_gates}


def stage_spec(stage: Stage, code_version: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=stage.name,
        deps=["brief", *stage.upstream],
        description=stage.description,
        group_name=stage.group,
        kinds=set(stage.kinds),
        code_version=code_version,
        automation_condition=FOLLOW_UPSTREAM,
        owners=STUDIO_OWNERS,
        # Not made when a blocking check gated the variant (see the module docstring).
        skippable=True,
    ).with_io_manager_key(MANIFEST_IO_MANAGER_KEY)


class _Pipeline:
    """The selected stages for every variant of the step, pipelined per variant."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        selected: Sequence[Stage],
        briefs: Mapping[str, VariantBriefDoc],
        load_stored: Any,
    ):
        self.context = context
        self.selected = {stage.name for stage in selected}
        self.briefs = briefs
        self.load_stored = load_stored
        self.manifests: dict[str, dict[str, Manifest]] = defaultdict(dict)
        self.metadata: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        self.failures: dict[str, dict[str, BaseException]] = defaultdict(dict)
        self.stage_seconds: dict[str, float] = defaultdict(float)

    async def run(self, router: ModelRouter, artifacts: BaseArtifactStore, settings: VariantMediaSettings) -> None:
        async with router.session(store=artifacts) as session:

            async def variant(key: str) -> None:
                done: dict[str, asyncio.Future] = {}

                async def stage_result(name: str) -> Manifest:
                    if name not in self.selected:  # not in this run: what is stored
                        return await asyncio.to_thread(self.load_stored, name, key)
                    if name not in done:
                        done[name] = asyncio.ensure_future(make(STAGES_BY_NAME[name]))
                    return await done[name]

                async def make(stage: Stage) -> Manifest:
                    inputs = {}
                    for name in stage.upstream:
                        try:
                            inputs[name] = await stage_result(name)
                        except Exception as exc:
                            raise UpstreamFailed(f"not run: {name} failed") from exc
                    call = StageCall(session, artifacts, settings, key, self.briefs[key], inputs)
                    started = time.perf_counter()
                    try:
                        manifest, metadata = await stage.work(call)
                    finally:
                        self.stage_seconds[stage.name] += time.perf_counter() - started
                    self.manifests[stage.name][key] = manifest
                    self.metadata[stage.name][key] = metadata
                    if stage.name in GATES:
                        outcomes = await asyncio.to_thread(GATES[stage.name], call, manifest)
                        problems = [f"{check}: {p}" for check, (passed, md) in outcomes.items() if not passed for p in md["problems"]]
                        if problems:
                            raise GateFailed("; ".join(problems))
                    return manifest

                # Start every selected stage; each waits on its own inputs.
                names = [s.name for s in STAGES if s.name in self.selected]
                outcomes = await asyncio.gather(*(stage_result(name) for name in names), return_exceptions=True)
                for name, outcome in zip(names, outcomes):
                    if isinstance(outcome, BaseException):
                        if not isinstance(outcome, Exception):
                            raise outcome  # cancellation, KeyboardInterrupt: not the variant's fault
                        self.failures[name][key] = outcome

            await asyncio.gather(*(variant(key) for key in self.briefs))


def build_variant_media_asset(code_versions: Mapping[str, str]) -> dg.AssetsDefinition:
    """`code_versions`: stage name -> code version (the routed ones carry their route's identity)."""

    @dg.multi_asset(
        name=VARIANT_MEDIA_STEP,
        specs=[stage_spec(stage, code_versions[stage.name]) for stage in STAGES],
        ins={"brief": dg.AssetIn("brief")},
        can_subset=True,
        partitions_def=variant_partitions,
        # Many variants in one run; the step pipelines them concurrently.
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=TORCH_POOL,
        # The IO manager too: a subset reads the unselected stages' stored manifests.
        required_resource_keys={"router", "artifacts", MANIFEST_IO_MANAGER_KEY},
        description="Concept, images, voiceover, captions and video of each variant, pipelined per variant.",
    )
    def variant_media(
        context: dg.AssetExecutionContext,
        config: VariantMediaSettings,
        brief: dict[str, VariantBriefDoc],
    ):
        router: ModelRouter = context.resources.router
        artifacts: BaseArtifactStore = context.resources.artifacts
        selected = [stage for stage in STAGES if dg.AssetKey(stage.name) in context.selected_asset_keys]
        io_manager = getattr(context.resources, MANIFEST_IO_MANAGER_KEY)
        keys = list(context.partition_keys)

        def load_stored(name: str, key: str) -> Manifest:
            try:
                return io_manager.load_manifest(dg.AssetKey(name), key)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no stored {name} for {key} at {io_manager.location(dg.AssetKey(name), key)}; materialize {name} first"
                ) from None

        pipeline = _Pipeline(context, selected, {key: brief[key] for key in keys}, load_stored)
        started = time.perf_counter()
        asyncio.run(pipeline.run(router, artifacts, config))
        context.log.info(
            f"{len(keys)} variants in {time.perf_counter() - started:.1f}s; seconds of stage work per variant: "
            + ", ".join(f"{name} {pipeline.stage_seconds[name] / len(keys):.2f}" for name in (s.name for s in selected))
        )

        complete = []
        for stage in selected:
            if set(pipeline.manifests[stage.name]) != set(keys):
                continue
            for key in keys:
                context.add_asset_metadata(dict(pipeline.metadata[stage.name][key]), asset_key=dg.AssetKey(stage.name), partition_key=key)
            complete.append(stage.name)
            yield dg.Output(pipeline.manifests[stage.name], output_name=stage.name)

        lines, failed_keys = [], set()
        for stage in selected:
            for key, exc in sorted(pipeline.failures[stage.name].items()):
                failed_keys.add(key)
                if isinstance(exc, UpstreamFailed):
                    continue  # the root cause is listed under the stage that failed
                if isinstance(exc, GateFailed):
                    # Its check step records the failed evaluation and fails the run.
                    context.log.warning(f"{stage.name} [{key}] failed a blocking check, later stages not made: {exc}")
                    continue
                context.log.error(f"{stage.name} [{key}] failed: {type(exc).__name__}: {exc}")
                lines.append(f"- {stage.name} [{key}]: {type(exc).__name__}: {exc}")
        if lines:
            raise dg.Failure(
                description=(
                    f"{len(failed_keys)} of {len(keys)} variants failed; stages complete for every variant "
                    f"({', '.join(complete) or 'none'}) are materialized and every stored artifact is kept; "
                    f"re-execute to finish the rest (stored calls are cache hits):\n" + "\n".join(lines)
                ),
                metadata={
                    "failed_partitions": sorted(failed_keys),
                    "succeeded_partitions": sorted(set(keys) - failed_keys),
                    "complete_stages": complete,
                },
            )

    return variant_media
