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
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import create_model

from assets.approvals import AwaitingApproval, Reviews, reseeded, subject_version
from assets.checks import measured
from assets.common import FOLLOW_UPSTREAM, MANIFEST_IO_MANAGER_KEY, STUDIO_OWNERS, TORCH_POOL
from assets.dagster_api import chunked_backfill_policy, partitioned_check_spec
from assets.engine import Engine, Judged, Node
from assets.experiments import check_measurements, work_with_shadow
from assets.recorder import Recorder
from assets.reuse import FINGERPRINT_METADATA_KEY, ReusePlan, input_fingerprint
from assets.stages import BrokenInput, CheckOutcome, Pipeline, PipelineStage, StageCall, StageCheck, StageCheckInput, variant_context
from resources.artifact_store import BaseArtifactStore
from resources.manifests import HISTORY_LIMIT, Manifest, Provenance, RejectedAnswer, VariantBriefDoc
from resources.model_router import ModelRouter, NoProviderSucceeded, RouterSession

logger = logging.getLogger(__name__)

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
    """What the engine calls for a stage and a variant: reuse, make, check.

    Quality-aware fallback lives here: when a blocking check that judges answers
    fails on a routed stage's output, the answer is marked rejected in the
    response cache and recorded (provider, seed, what it answered, the verdict),
    and while the route has a provider left the engine makes the stage again:
    the router asks the same provider with a new seed up to the task's
    `quality_retries`, then the next one (resources/model_router.py). The answer
    that stands carries the rejected ones in its provenance and metadata.
    """

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
        reviews: Reviews | None = None,
    ):
        self.pipeline, self.code_versions, self.briefs, self.artifacts, self.reuse_plan = pipeline, code_versions, briefs, artifacts, reuse
        self.settings = settings
        self.checks: dict[str, list[StageCheck]] = {stage.name: [] for stage in pipeline.stages}
        for check in checks:
            self.checks[check.stage].append(check)
        self._load_stored = load_stored
        self.reviews = reviews
        self._stage_briefs: dict[tuple[str, str], VariantBriefDoc] = {}
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._rejected: dict[tuple[str, str], list[RejectedAnswer]] = {}
        self._answers: dict[tuple[str, str], list[Provenance]] = {}  # the router's answers to the latest make
        self._history: dict[tuple[str, str], tuple[Provenance, ...]] = {}
        self._prepared: set[str] = set()  # stages whose checks' models were asked to load
        self.session: RouterSession | None = None

    def _fingerprint(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> str:
        # Asked by reuse, then by make for the same inputs: hashed once.
        if (stage, key) not in self._fingerprints:
            brief = self._stage_briefs.get((stage, key), self.briefs[key])
            extra = self.pipeline.stage(stage).kind.fingerprint_extra
            self._fingerprints[(stage, key)] = input_fingerprint(
                stage, self.code_versions[stage], brief, self.settings[stage], inputs, extra(brief) if extra else None
            )
        return self._fingerprints[(stage, key)]

    async def _stage_brief(self, stage: str, key: str) -> VariantBriefDoc:
        """The variant's brief as this stage sees it: a stage a reviewer sent back to be made
        again is made with a new seed for each such rejection (assets/approvals.py)."""
        if (stage, key) not in self._stage_briefs:
            brief = self.briefs[key]
            if (
                self.reviews is not None
                and brief.approval == "required"
                and any(self.pipeline.gate_subject(gate.name) == stage for gate in self.pipeline.gates)
            ):
                regenerations = await asyncio.to_thread(self.reviews.regenerations, stage, key)
                brief = brief.model_copy(update={"seed": reseeded(brief.seed, regenerations)})
            self._stage_briefs[(stage, key)] = brief
        return self._stage_briefs[(stage, key)]

    async def _hold_unapproved(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> None:
        """A stage behind an approval stage is made only from the version of the subject that was
        approved: a subject made again since (by automation, say) waits for its own verdict."""
        spec = self.pipeline.stage(stage)
        for gate in self.pipeline.gates_of(stage):
            subject = self.pipeline.gate_subject(gate)
            slot = next((slot for slot, upstream in spec.inputs.items() if upstream == subject), None)
            current = inputs[slot] if slot is not None else await self.load_stored(subject, key)
            if subject_version(current) != inputs[gate].subject_version:
                raise AwaitingApproval(f"{subject} changed since {gate} passed it; the new version waits for its verdict")

    async def load_stored(self, stage: str, key: str) -> Manifest:
        return await asyncio.to_thread(self._load_stored, stage, key)

    async def reuse(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> Manifest | None:
        if self.reuse_plan is None:
            return None
        await self._stage_brief(stage, key)
        return await asyncio.to_thread(self.reuse_plan.stored_if_unchanged, stage, key, self._fingerprint(stage, key, inputs))

    async def _earlier_makes(self, stage: str, key: str) -> tuple[Provenance, ...]:
        """The provenance of the stored output's makes: what this make appends to."""
        if (stage, key) not in self._history:
            try:
                stored = await asyncio.to_thread(self._load_stored, stage, key)
            except Exception:  # nothing stored yet (or unreadable: it is made again and stored over)
                stored = None
            provenance = getattr(stored, "provenance", None)
            earlier = (*stored.history, provenance) if provenance is not None else ()
            self._history[(stage, key)] = tuple(earlier[-HISTORY_LIMIT:])
        return self._history[(stage, key)]

    async def make(self, stage: str, key: str, inputs: Mapping[str, Manifest]) -> tuple[Manifest, Mapping[str, Any]]:
        spec = self.pipeline.stage(stage)
        rejected = self._rejected.get((stage, key), [])
        await self._hold_unapproved(stage, key, inputs)
        self._prepare_checks(stage)
        call = StageCall(
            self.session,
            self.artifacts,
            self.settings[stage],
            key,
            await self._stage_brief(stage, key),
            inputs,
            spec.task,
            rejected=tuple(answer.provider for answer in rejected),
            stage=stage,
            reviews=self.reviews,
        )
        try:
            # In a shadow experiment the candidate route makes the stage beside it (assets/experiments.py).
            manifest, metadata = await work_with_shadow(spec, call, self.checks[stage])
        except BrokenInput as exc:
            await self._reject_input(stage, inputs, exc)
            raise
        except NoProviderSucceeded as exc:
            if rejected:  # what the providers left in the route answered before, and why it was rejected
                raise NoProviderSucceeded(f"{exc} | {rejected_summary(rejected)}") from exc
            raise
        self._answers[(stage, key)] = list(call.answers)
        fingerprint = self._fingerprint(stage, key, inputs)
        update: dict[str, Any] = {"input_fingerprint": fingerprint}
        metadata = {**metadata, FINGERPRINT_METADATA_KEY: fingerprint}
        provenance = getattr(manifest, "provenance", None)
        if provenance is not None:
            earlier = await self._earlier_makes(stage, key)
            update["history"] = earlier
            metadata["earlier_makes"] = len(earlier)
            if rejected:
                update["provenance"] = provenance.model_copy(update={"rejected": tuple(rejected)})
                metadata["rejected_answers"] = rejected_answers_markdown(rejected)
        return manifest.model_copy(update=update), metadata

    def _prepare_checks(self, stage: str) -> None:
        """On the stage's first make in this run, its checks' models load in a thread of their
        own while the provider answers (a cold worker's first verdicts waited ~3 CPU s for MiniLM)."""
        if stage in self._prepared:
            return
        self._prepared.add(stage)
        preparations = [check.kind.prepare for check in self.checks[stage] if check.kind.prepare is not None]
        if preparations:
            briefs = list(self.briefs.values())
            threading.Thread(target=_prepare, args=(preparations, briefs), name=f"prepare-{stage}-checks", daemon=True).start()

    async def _reject_input(self, stage: str, inputs: Mapping[str, Manifest], exc: BrokenInput) -> None:
        """A later stage proved an input broken: the answer that made it is never served again,
        and the stored input is not reused (assets/reuse.py), so the next run makes it anew."""
        provenance = getattr(inputs.get(exc.slot), "provenance", None)
        if provenance is not None and self.session is not None:
            await asyncio.to_thread(self.session.reject, provenance, f"proved broken by {stage}: {exc}")

    async def check(self, stage: str, key: str, manifest: Manifest, inputs: Mapping[str, Manifest]) -> Judged:
        checks = self.checks[stage]
        if not checks:
            return Judged(manifest)
        item = StageCheckInput(self.artifacts, self.briefs[key], manifest, inputs, self.settings[stage])
        outcomes = await asyncio.to_thread(_run_checks, checks, item)
        # (check, "check: problem") for each problem of a failed blocking check
        failures = [
            (check, f"{check.name}: {problem}")
            for check in checks
            if check.blocking and not outcomes[check.name].passed
            for problem in outcomes[check.name].metadata["problems"]
        ]
        passed = tuple(check.name for check in checks if outcomes[check.name].passed)
        recorded = {"checks_passed": passed, "check_measurements": check_measurements(outcomes)}
        judged = Judged(manifest.model_copy(update=recorded), outcomes, tuple(text for _, text in failures))
        verdicts = tuple(text for check, text in failures if check.judges_answer)
        answers = self._answers.get((stage, key), [])
        if not verdicts or not answers:
            return judged
        return await self._rejected_answer(stage, key, judged, answers, verdicts)

    async def _rejected_answer(self, stage: str, key: str, judged: Judged, answers: list[Provenance], verdicts: tuple[str, ...]) -> Judged:
        answer = answers[-1]
        rejected = self._rejected.setdefault((stage, key), [])
        rejected.append(
            RejectedAnswer(
                provider=answer.adapter_id,
                model=f"{answer.model}@{answer.model_version}",
                seed=answer.seed,
                answered=answered(judged.manifest),
                rejected_by=verdicts,
                cost_usd=sum(a.cost_usd for a in answers),
                cache_hit=answer.cache_hit,
            )
        )
        reason = "; ".join(verdicts)
        for provenance in answers:
            await asyncio.to_thread(self.session.reject, provenance, reason)
        task, variant = self.pipeline.stage(stage).task, variant_context(self.briefs[key])
        if self.session.has_untried(task, variant, [r.provider for r in rejected]):
            return dataclasses.replace(judged, retry=True)
        # The route is exhausted: this answer is recorded as blocked, naming every rejected one.
        summary = "every provider in the route answered something its checks rejected: " + rejected_summary(rejected)
        return dataclasses.replace(judged, blocking_failures=(*judged.blocking_failures, summary))


def rejected_summary(rejected: list[RejectedAnswer]) -> str:
    return " | ".join(f"{r.provider} (seed {r.seed}) answered {r.answered}; rejected by {'; '.join(r.rejected_by)}" for r in rejected)


def answered(manifest: Any) -> str:
    """What an answer was, in a line: the concept's headline and script, else its file."""
    if hasattr(manifest, "script"):
        script = manifest.script if len(manifest.script) <= 80 else manifest.script[:77] + "..."
        return f"headline {manifest.headline!r}, script {script!r}"
    ref = getattr(manifest, "artifact", None)
    if ref is None:
        return type(manifest).__name__
    size = f" {manifest.width}x{manifest.height}" if hasattr(manifest, "width") else ""
    duration = f" {manifest.duration_s:.2f} s" if hasattr(manifest, "duration_s") else ""
    return f"{ref.media_type}{size}{duration}, {ref.size_bytes} bytes"


def rejected_answers_markdown(rejected: list[RejectedAnswer]) -> dg.MarkdownMetadataValue:
    """The rejected answers as a table on the materialization that stands (the UI shows it)."""
    rows = [
        f"| {r.provider} | {r.seed if r.seed is not None else ''} | {r.answered} | {'; '.join(r.rejected_by)} | {r.cost_usd:.4f} |"
        for r in rejected
    ]
    header = "| provider | seed | answered | rejected by | cost (USD) |\n|---|---|---|---|---|\n"
    return dg.MetadataValue.md(header + "\n".join(row.replace("\n", " ") for row in rows))


def _prepare(preparations: list[Callable[[Sequence[VariantBriefDoc]], None]], briefs: list[VariantBriefDoc]) -> None:
    for prepare in preparations:
        try:
            prepare(briefs)
        except Exception:  # the check meets the same error when it runs and reports it per variant
            logger.debug("preparing a check failed", exc_info=True)


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
        reviews = Reviews(context.instance, pipeline) if pipeline.gates else None
        hooks = _StageHooks(
            pipeline, code_versions, settings, checks, {key: brief[key] for key in keys}, artifacts, reuse, load_stored, reviews
        )
        recorder = Recorder(context, pipeline, selected, checks, keys, reuse)

        # The engine runs on its own event loop in a worker thread; this (the op's) thread
        # records each stage as soon as it is settled for every variant, while later stages
        # still run: the event-log writes overlap the provider calls.
        events: queue.Queue = queue.Queue()

        async def run_engine() -> None:
            async with router.session(store=artifacts, instance=context.instance) as session:
                hooks.session = session
                nodes = [Node(stage.name, dict(stage.inputs)) for stage in pipeline.stages]
                engine = Engine(
                    nodes,
                    selected,
                    make=hooks.make,
                    reuse=hooks.reuse,
                    check=hooks.check,
                    load_stored=hooks.load_stored,
                    emit=events.put,
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
                check.name,
                check.asset_key,
                blocking=check.blocking,
                description=check.description(),
                partitions_def=pipeline.partitions_def,
            )
            for check in pipeline.checks()
        ],
        ins={"brief": dg.AssetIn(pipeline.brief_key)},
        can_subset=True,
        partitions_def=pipeline.partitions_def,
        # Many variants in one run (the step pipelines them concurrently), chunked as the pipeline says.
        backfill_policy=chunked_backfill_policy(pipeline.max_variants_per_run),
        pool=TORCH_POOL,
        # The IO manager too: a subset reads the unselected stages' stored manifests.
        required_resource_keys={"router", "artifacts", MANIFEST_IO_MANAGER_KEY},
        description=f"Every stage of the {pipeline.name!r} pipeline ({pipeline.source}), pipelined per variant.",
    )(variant_media)
