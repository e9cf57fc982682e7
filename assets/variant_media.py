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

The media checks are check specs of this multi-asset and run here, for each
variant as soon as the stage they measure has made its output (their
functions are in assets/checks.py, `STAGE_CHECKS`). A check step after this
one would come too late to stop a variant's later stages, and would read and
measure every artifact again. A variant whose output fails a blocking check
(a voiceover over the loudness limit, say) goes no further: it is not
captioned or composited. The checked stage is materialized with its failed
evaluation, the stages it stopped are not, and Dagster then fails the step.

Each stage's materializations and check results are recorded as soon as that
stage is done for every variant of the run, while later stages still run. A
variant that fails at a stage (a provider error, a broken response) skips
what follows it for that variant; the other variants go on. Every stage that
succeeded for all the run's variants is materialized, and the step then fails
naming each failed variant, stage and error (its stored calls are
response-cache hits on the retry).

A stage whose input fingerprint has not changed since its last recorded
materialization is not made, checked or recorded again (assets/reuse.py);
`force` in the step's config makes and records everything.
"""

import asyncio
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from assets.captions import CAPTIONS
from assets.checks import STAGE_CHECKS, CheckOutcome, StageCheck, StageCheckInput, check_evaluation, latest_materializations
from assets.common import FOLLOW_UPSTREAM, MANIFEST_IO_MANAGER_KEY, STUDIO_OWNERS, TORCH_POOL
from assets.concept import CONCEPT
from assets.images import DRAFT_IMAGE, REFINED_IMAGE
from assets.partitions import variant_partitions
from assets.reuse import FINGERPRINT_METADATA_KEY, ReusePlan, input_fingerprint
from assets.stages import Stage, StageCall, VariantMediaSettings
from assets.video import SYNCED_VIDEO
from assets.voiceover import VOICEOVER
from resources.artifact_store import BaseArtifactStore
from resources.manifests import Manifest, VariantBriefDoc
from resources.model_router import ModelRouter

# In dependency order.
STAGES: tuple[Stage, ...] = (CONCEPT, DRAFT_IMAGE, REFINED_IMAGE, VOICEOVER, CAPTIONS, SYNCED_VIDEO)
STAGES_BY_NAME = {stage.name: stage for stage in STAGES}
VARIANT_MEDIA_STEP = "variant_media"


class UpstreamFailed(RuntimeError):
    """A stage not run for a variant because a stage it reads failed."""


class BlockingCheckFailed(RuntimeError):
    """A stage's output failed one of its blocking checks: what reads it is not made."""


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
        selected: Sequence[Stage],
        checks: Sequence[StageCheck],
        briefs: Mapping[str, VariantBriefDoc],
        load_stored: Any,
        code_versions: Mapping[str, str],
        reuse: ReusePlan | None = None,
        on_stage_settled: Callable[[str], None] = lambda stage: None,
    ):
        self.on_stage_settled = on_stage_settled
        self.code_versions = code_versions
        self.reuse = reuse
        self.settled: dict[str, set[str]] = defaultdict(set)
        self.selected = {stage.name for stage in selected}
        self.checks_by_stage: dict[str, list[StageCheck]] = defaultdict(list)
        for check in checks:
            self.checks_by_stage[check.asset].append(check)
        self.outcomes: dict[tuple[str, str], dict[str, CheckOutcome]] = defaultdict(dict)
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
                    try:
                        return await make_and_check(stage)
                    finally:
                        self._settle(stage.name, key)

                async def make_and_check(stage: Stage) -> Manifest:
                    inputs = {}
                    for name in stage.upstream:
                        try:
                            inputs[name] = await stage_result(name)
                        except Exception as exc:
                            raise UpstreamFailed(f"not run: {name} failed") from exc
                    fingerprint = input_fingerprint(stage.name, self.code_versions[stage.name], self.briefs[key], settings, inputs)
                    if self.reuse is not None:
                        stored = await asyncio.to_thread(self.reuse.stored_if_unchanged, stage.name, key, fingerprint)
                        if stored is not None:
                            self.manifests[stage.name][key] = stored
                            return stored
                    call = StageCall(session, artifacts, settings, key, self.briefs[key], inputs)
                    started = time.perf_counter()
                    try:
                        manifest, metadata = await stage.work(call)
                    finally:
                        self.stage_seconds[stage.name] += time.perf_counter() - started
                    manifest = manifest.model_copy(update={"input_fingerprint": fingerprint})
                    self.metadata[stage.name][key] = {**metadata, FINGERPRINT_METADATA_KEY: fingerprint}
                    failed: list[str] = []
                    if self.checks_by_stage[stage.name]:
                        item = StageCheckInput(artifacts, self.briefs[key], manifest, inputs)
                        failed = await asyncio.to_thread(self._check, stage.name, key, item)
                        passed = tuple(
                            c.name for c in self.checks_by_stage[stage.name] if self.outcomes[(c.asset, c.name)][key].passed
                        )
                        manifest = manifest.model_copy(update={"checks_passed": passed})
                    # Kept when a blocking check failed: the stage is materialized with its failed evaluation.
                    self.manifests[stage.name][key] = manifest
                    if failed:
                        raise BlockingCheckFailed("; ".join(failed))
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

    def _settle(self, stage: str, key: str) -> None:
        """`stage` is done with `key` (made, failed or not run); tell when it is done with all."""
        self.settled[stage].add(key)
        if len(self.settled[stage]) == len(self.briefs):
            self.on_stage_settled(stage)

    def _check(self, stage: str, key: str, item: StageCheckInput) -> list[str]:
        """Run the stage's selected checks on one variant's output; what failed the blocking ones."""
        failed = []
        for check in self.checks_by_stage[stage]:
            try:
                outcome = check.evaluate(item)
            except Exception as exc:  # the check could not measure: a failed check, named
                outcome = CheckOutcome(False, {"problems": [f"could not be checked: {type(exc).__name__}: {exc}"]})
            self.outcomes[(check.asset, check.name)][key] = outcome
            if check.blocking and not outcome.passed:
                failed += [f"{check.name}: {problem}" for problem in outcome.metadata["problems"]]
        return failed


def add_partition_metadata(context: dg.AssetExecutionContext, asset_key: dg.AssetKey, by_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """`context.add_asset_metadata` for many partitions of the step at once.

    Dagster 1.13's `add_asset_metadata(partition_key=...)` re-reads the dynamic
    partitions from the instance on every call to check the key (~17 ms each on
    this machine: 6 s for the 384 calls of a 64-variant run). The keys here are
    the step's own, checked once against `context.partition_keys`; the
    metadata goes to the same accumulator the public method fills.
    """
    targeted = set(context.partition_keys)
    unknown = set(by_partition) - targeted
    if unknown:
        raise dg.DagsterInvariantViolationError(f"metadata for partitions this step does not target: {sorted(unknown)}")
    step = context.get_step_execution_context()
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):  # another Dagster: the public way
        for key, metadata in by_partition.items():
            context.add_asset_metadata(dict(metadata), asset_key=asset_key, partition_key=key)
        return
    for key, metadata in by_partition.items():
        accumulator = accumulator.with_additional_asset_metadata(asset_key=asset_key, metadata=dict(metadata), partition_key=key)
    step._metadata_accumulator = accumulator  # noqa: SLF001


def build_variant_media_asset(code_versions: Mapping[str, str]) -> dg.AssetsDefinition:
    """`code_versions`: stage name -> code version (the routed ones carry their route's identity)."""

    @dg.multi_asset(
        name=VARIANT_MEDIA_STEP,
        specs=[stage_spec(stage, code_versions[stage.name]) for stage in STAGES],
        check_specs=[check.spec() for check in STAGE_CHECKS],
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
        checks = [c for c in STAGE_CHECKS if dg.AssetCheckKey(dg.AssetKey(c.asset), c.name) in context.selected_asset_check_keys]
        io_manager = getattr(context.resources, MANIFEST_IO_MANAGER_KEY)
        keys = list(context.partition_keys)

        def load_stored(name: str, key: str) -> Manifest:
            try:
                return io_manager.load_manifest(dg.AssetKey(name), key)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no stored {name} for {key} at {io_manager.location(dg.AssetKey(name), key)}; materialize {name} first"
                ) from None

        # The pipeline runs on its own event loop in a worker thread; this (the op's)
        # thread records each stage's materializations and check results as soon as
        # that stage is done for every variant, while later stages still run: the
        # event-log writes (~25 ms each here) overlap the provider calls.
        settled: queue.Queue[tuple[str, Any]] = queue.Queue()
        reuse = None if config.force else ReusePlan.for_run(context.instance, [s.name for s in selected], keys, checks, load_stored, artifacts)
        pipeline = _Pipeline(
            selected, checks, {key: brief[key] for key in keys}, load_stored, code_versions, reuse,
            on_stage_settled=lambda stage: settled.put(("stage", stage)),
        )
        started = time.perf_counter()

        def run_pipeline() -> None:
            try:
                asyncio.run(pipeline.run(router, artifacts, config))
                settled.put(("done", None))
            except BaseException as exc:  # re-raised in the op's thread
                settled.put(("error", exc))

        worker = threading.Thread(target=run_pipeline, name="variant-media-pipeline", daemon=True)
        worker.start()
        complete: list[str] = []
        unchanged: list[str] = []

        def record(stage_name: str):
            if set(pipeline.manifests[stage_name]) != set(keys):
                return
            complete.append(stage_name)
            reused = reuse.reused_keys(stage_name) if reuse else set()
            if reused == set(keys):
                unchanged.append(stage_name)  # nothing new to record (assets/reuse.py)
                return
            # Variants whose stored output stands keep their last materialization's metadata.
            metadata = {key: reuse.recorded[stage_name][key].metadata if key in reused else pipeline.metadata[stage_name][key] for key in keys}
            add_partition_metadata(context, dg.AssetKey(stage_name), metadata)
            yield dg.Output(pipeline.manifests[stage_name], output_name=stage_name)
            # Check results, one per variant, against the materialization they judged.
            # A failed blocking one fails the step (Dagster raises once they are recorded).
            targets = latest_materializations(context.instance, stage_name, keys)
            for check in (c for c in checks if c.asset == stage_name):
                for key in keys:
                    if key in reused:
                        outcome = CheckOutcome(True, {"unchanged": "the output this check passed when it was made", "problems": []})
                    else:
                        outcome = pipeline.outcomes[(check.asset, check.name)][key]
                    yield check_evaluation(check.asset, check.name, check.blocking, key, outcome, targets.get(key))

        while True:
            kind, value = settled.get()
            if kind == "stage":
                yield from record(value)
            elif kind == "error":
                worker.join()
                raise value
            else:
                break
        worker.join()
        context.log.info(
            f"{len(keys)} variants in {time.perf_counter() - started:.1f}s; seconds of stage work per variant: "
            + ", ".join(f"{name} {pipeline.stage_seconds[name] / len(keys):.2f}" for name in (s.name for s in selected))
        )
        if unchanged:
            context.log.info(
                f"unchanged, not made or recorded again: {', '.join(s.name for s in STAGES if s.name in unchanged)} (set force to remake them)"
            )
        for check in checks:  # the checks of unchanged stages have no result here: their last ones stand
            check_key = dg.AssetCheckKey(dg.AssetKey(check.asset), check.name)
            yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key))

        lines, failed_keys = [], set()
        for stage in selected:
            for key, exc in sorted(pipeline.failures[stage.name].items()):
                failed_keys.add(key)
                if isinstance(exc, UpstreamFailed):
                    continue  # the root cause is listed under the stage that failed
                if isinstance(exc, BlockingCheckFailed):
                    # Its evaluation is recorded above; Dagster fails the step for it.
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
