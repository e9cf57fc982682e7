"""The model step: every stage of a pipeline as one subsettable multi-asset.

Why one step and not one per stage: Dagster starts a step only when the step
before it has finished for every partition of the run, so with one asset per
step a 64-variant backfill waits for the slowest concept before the first
image starts, and the providers of later stages sit idle while earlier ones
work. Here each variant goes through its stages as soon as its inputs are
ready, all variants at once, bounded only by each provider's concurrency
limit: the stages pipeline.

What stays per asset: each stage is its own asset (spec, code version,
automation condition, checks, lineage edges, one materialization per
partition with its metadata, one JSON manifest per partition). The step is
subsettable: a job or automation that selects some stages runs only those,
reading the others' stored manifests (e.g. `regenerate_video` re-runs only
the video).

Three parts, each small:
- assets/engine.py runs the stages over the variants (plain asyncio) and
  emits events: made, reused, failed, settled;
- `_StageHooks` (here) is what the engine calls: make a stage's output through
  its kind's work, decide reuse (assets/reuse.py), run its checks;
- assets/recorder.py turns the events into Dagster outputs, metadata and
  check evaluations, in the op's thread, as soon as a stage is settled for
  every variant, while later stages still run.

A variant whose output fails a blocking check goes no further: the checked
stage is materialized with its failed evaluation, the stages it stopped are
not, and Dagster then fails the step. A variant that fails at a stage skips
what follows it; the other variants go on; the step then fails naming each
failed variant, stage and error (its stored calls are cache hits on the retry).
"""

import asyncio
import queue
import threading
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import create_model

from assets.checks import measured
from assets.common import FOLLOW_UPSTREAM, MANIFEST_IO_MANAGER_KEY, STUDIO_OWNERS, TORCH_POOL
from assets.dagster_api import partitioned_check_spec, single_run_backfill_policy
from assets.engine import Engine, Judged, Node
from assets.recorder import Recorder
from assets.reuse import FINGERPRINT_METADATA_KEY, ReusePlan, input_fingerprint
from assets.stages import CheckOutcome, Pipeline, PipelineStage, StageCall, StageCheck, StageCheckInput
from resources.artifact_store import BaseArtifactStore
from resources.manifests import Manifest, VariantBriefDoc
from resources.model_router import ModelRouter, RouterSession

VARIANT_MEDIA_STEP = "variant_media"
ACCELERATOR_TAG = "studio/accelerator"


def accelerator(stage: PipelineStage) -> str:
    return "nvidia-gpu" if stage.kind.accelerator else "cpu"


def stage_spec(pipeline: Pipeline, stage: PipelineStage, code_version: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=pipeline.key(stage.name),
        deps=[pipeline.brief_key, *(pipeline.key(name) for name in stage.upstream)],
        description=stage.description,
        group_name=pipeline.group_name,
        kinds=set(stage.kind.kinds),
        code_version=code_version,
        automation_condition=FOLLOW_UPSTREAM,
        owners=STUDIO_OWNERS,
        tags={ACCELERATOR_TAG: accelerator(stage), "studio/stage_kind": stage.kind.name, "studio/pipeline": pipeline.name},
        # Not made when a blocking check gated the variant (see the module docstring).
        skippable=True,
    ).with_io_manager_key(MANIFEST_IO_MANAGER_KEY)


def step_config_class(pipeline: Pipeline) -> type[dg.Config]:
    """The step's run config: one section per stage that has settings (defaults from the
    pipeline file, overridable in the launchpad), and `force`."""
    fields: dict[str, Any] = {
        stage.name: (type(stage.settings), stage.settings) for stage in pipeline.stages if type(stage.settings).model_fields
    }
    # Make and record every selected stage even where nothing changed (assets/reuse.py);
    # provider answers still come from the response cache where the routing allows it.
    fields["force"] = (bool, False)
    name = "".join(part.capitalize() for part in pipeline.name.replace("-", "_").split("_")) + "StepConfig"
    return create_model(name, __base__=dg.Config, **fields)


def step_settings(pipeline: Pipeline, config: Any) -> dict[str, Any]:
    """Stage name -> its settings in this run: the run config's section, else the pipeline file's."""
    return {stage.name: getattr(config, stage.name, stage.settings) for stage in pipeline.stages}


class _StageHooks:
    """What the engine calls for a stage and a variant: reuse, make, check."""

    def __init__(
        self,
        pipeline: Pipeline,
        code_versions: Mapping[str, str],
        settings: Mapping[str, Any],
        checks: list[StageCheck],
        briefs: Mapping[str, VariantBriefDoc],
        artifacts: BaseArtifactStore,
        reuse: ReusePlan | None,
        load_stored: Any,
    ):
        self.pipeline, self.code_versions, self.briefs, self.artifacts, self.reuse_plan = pipeline, code_versions, briefs, artifacts, reuse
        self.settings = settings
        self.checks: dict[str, list[StageCheck]] = {stage.name: [] for stage in pipeline.stages}
        for check in checks:
            self.checks[check.stage].append(check)
        self._load_stored = load_stored
        self._fingerprints: dict[tuple[str, str], str] = {}
        self.session: RouterSession | None = None

    def _fingerprint(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> str:
        # Asked by reuse, then by make for the same inputs: hashed once.
        if (stage, key) not in self._fingerprints:
            self._fingerprints[(stage, key)] = input_fingerprint(stage, self.code_versions[stage], self.briefs[key], self.settings[stage], inputs)
        return self._fingerprints[(stage, key)]

    async def load_stored(self, stage: str, key: str) -> Manifest:
        return await asyncio.to_thread(self._load_stored, stage, key)

    async def reuse(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> Manifest | None:
        if self.reuse_plan is None:
            return None
        return await asyncio.to_thread(self.reuse_plan.stored_if_unchanged, stage, key, self._fingerprint(stage, key, inputs))

    async def make(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> tuple[Manifest, Mapping[str, Any]]:
        spec = self.pipeline.stage(stage)
        call = StageCall(self.session, self.artifacts, self.settings[stage], key, self.briefs[key], inputs, spec.task)
        manifest, metadata = await spec.kind.work(call)
        fingerprint = self._fingerprint(stage, key, inputs)
        return manifest.model_copy(update={"input_fingerprint": fingerprint}), {**metadata, FINGERPRINT_METADATA_KEY: fingerprint}

    async def check(self, stage: str, key: str, manifest: Manifest, inputs: Mapping[str, Manifest]) -> Judged:
        checks = self.checks[stage]
        if not checks:
            return Judged(manifest)
        item = StageCheckInput(self.artifacts, self.briefs[key], manifest, inputs, self.settings[stage])
        outcomes = await asyncio.to_thread(_run_checks, checks, item)
        failed = tuple(
            f"{check.name}: {problem}" for check in checks if check.blocking and not outcomes[check.name].passed
            for problem in outcomes[check.name].metadata["problems"]
        )
        passed = tuple(check.name for check in checks if outcomes[check.name].passed)
        return Judged(manifest.model_copy(update={"checks_passed": passed}), outcomes, failed)


def _run_checks(checks: list[StageCheck], item: StageCheckInput) -> dict[str, CheckOutcome]:
    return {check.name: measured(check.kind.evaluate, item) for check in checks}


def build_variant_media_asset(pipeline: Pipeline, code_versions: Mapping[str, str]) -> dg.AssetsDefinition:
    """`code_versions`: stage name -> code version (the routed ones carry their route's identity)."""
    config_class = step_config_class(pipeline)

    def variant_media(context: dg.AssetExecutionContext, config, brief: dict[str, VariantBriefDoc]):
        router: ModelRouter = context.resources.router
        artifacts: BaseArtifactStore = context.resources.artifacts
        io_manager = getattr(context.resources, MANIFEST_IO_MANAGER_KEY)
        selected = [stage.name for stage in pipeline.stages if pipeline.key(stage.name) in context.selected_asset_keys]
        settings = step_settings(pipeline, config)
        checks = [check for check in pipeline.checks(settings) if check.key in context.selected_asset_check_keys]
        keys = list(context.partition_keys)

        def load_stored(name: str, key: str) -> Manifest:
            asset_key = pipeline.key(name)
            try:
                return io_manager.load_manifest(asset_key, key)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no stored {name} for {key} at {io_manager.location(asset_key, key)}; materialize {name} first"
                ) from None

        reuse = None if config.force else ReusePlan.for_run(context.instance, pipeline, selected, keys, checks, load_stored, artifacts)
        hooks = _StageHooks(pipeline, code_versions, settings, checks, {key: brief[key] for key in keys}, artifacts, reuse, load_stored)
        recorder = Recorder(context, pipeline, selected, checks, keys, reuse)

        # The engine runs on its own event loop in a worker thread; this (the op's) thread
        # records each stage as soon as it is settled for every variant, while later stages
        # still run: the event-log writes overlap the provider calls.
        events: queue.Queue = queue.Queue()

        async def run_engine() -> None:
            async with router.session(store=artifacts) as session:
                hooks.session = session
                nodes = [Node(stage.name, dict(stage.inputs)) for stage in pipeline.stages]
                engine = Engine(
                    nodes, selected, make=hooks.make, reuse=hooks.reuse, check=hooks.check,
                    load_stored=hooks.load_stored, emit=events.put,
                )
                await engine.run(keys)

        def worker() -> None:
            try:
                asyncio.run(run_engine())
                events.put(None)
            except BaseException as exc:  # re-raised in the op's thread
                events.put(exc)

        thread = threading.Thread(target=worker, name=f"{pipeline.name}-model-step", daemon=True)
        thread.start()
        while True:
            event = events.get()
            if event is None:
                break
            if isinstance(event, BaseException):
                thread.join()
                raise event
            yield from recorder.handle(event)
        thread.join()
        yield from recorder.finish()

    variant_media.__annotations__["config"] = config_class
    return dg.multi_asset(
        name=pipeline.named(VARIANT_MEDIA_STEP),
        specs=[stage_spec(pipeline, stage, code_versions[stage.name]) for stage in pipeline.stages],
        check_specs=[
            partitioned_check_spec(
                check.name, check.asset_key, blocking=check.blocking, description=check.description(), partitions_def=pipeline.partitions_def
            )
            for check in pipeline.checks()
        ],
        ins={"brief": dg.AssetIn(pipeline.brief_key)},
        can_subset=True,
        partitions_def=pipeline.partitions_def,
        # Many variants in one run; the step pipelines them concurrently.
        backfill_policy=single_run_backfill_policy(),
        pool=TORCH_POOL,
        # The IO manager too: a subset reads the unselected stages' stored manifests.
        required_resource_keys={"router", "artifacts", MANIFEST_IO_MANAGER_KEY},
        description=f"Every stage of the {pipeline.name!r} pipeline ({pipeline.source}), pipelined per variant.",
    )(variant_media)
