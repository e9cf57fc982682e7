"""Stage kinds, and a pipeline as the stages it instantiates.

A *stage kind* (one record, `StageKind`) is how one variant's asset is made:
the manifests it reads (named input slots), the routed task it calls (or
none), its settings model, the checks that judge its output (thresholds from
its own settings), whether it wants an accelerator, what it adds to the
campaign roll-up, and the coroutine that does the work. Kinds are registered
by name in assets/stage_kinds/; nothing else lists them.

A *pipeline* (`Pipeline`, loaded from config/pipelines/*.yaml by
orchestration/pipelines.py) instantiates kinds as named stages, binds each
input slot to an earlier stage, fixes the settings and the task, and picks the
checks. assets/variant_media.py turns one pipeline into one subsettable
multi-asset step; jobs, GPU placement, the roll-up, estimates and the
benchmark read the same records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import dagster as dg

from model_adapters.received import media_mismatch
from model_adapters.tasks import TaskSpec
from resources.artifact_store import BaseArtifactStore
from resources.manifests import ArtifactRef, Manifest, VariantBriefDoc
from resources.model_router import RouterSession, VariantContext
from resources.routing_config import RoutingConfig


class StageSettings(dg.Config):
    """Base of every stage kind's settings: a pipeline file sets them, the launchpad overrides them per run."""


class NoSettings(StageSettings):
    pass


class CheckOutcome(NamedTuple):
    """What a check function found: pass/fail and the measured values.

    `metadata["problems"]` lists what failed (empty when it passed); the rest
    are measurements, ready to be Dagster metadata.
    """

    passed: bool
    metadata: dict[str, Any]


class StageCheckInput(NamedTuple):
    """What a stage check reads: the artifact store, the variant's brief, the stage's
    manifest, the manifests bound to its input slots and the stage's settings."""

    artifacts: BaseArtifactStore
    brief: VariantBriefDoc
    manifest: Any
    inputs: Mapping[str, Any]
    settings: Any


@dataclass(frozen=True)
class CheckKind:
    """A check a stage kind offers. `describe(settings)` says what it requires with the
    stage's own thresholds, so the description and the verdict cannot disagree.

    `judges_answer`: on a routed stage, a blocking failure of this check is a failed
    attempt of the provider that answered (retried with a new seed, then the next
    provider: docs/routing.md). A check of something the provider does not decide
    (spend, say) sets it False.

    `prepare(briefs)`: loads what `evaluate` will need (a model) for a run making these
    variants. The step calls it in the background when the stage first makes something, so
    a cold process loads the model while the provider answers rather than after."""

    name: str
    blocking: bool
    describe: Callable[[Any], str]
    evaluate: Callable[[StageCheckInput], CheckOutcome]
    judges_answer: bool = True
    prepare: Callable[[Sequence[VariantBriefDoc]], None] | None = None


class BrokenInput(RuntimeError):
    """A stage's input turned out unusable (its bytes do not decode as what its manifest
    says): the answer that made it is marked rejected in the response cache and the
    stored input is not reused, so the next run makes it again."""

    def __init__(self, slot: str, reason: str):
        super().__init__(f"input {slot!r} is unusable: {reason}")
        self.slot = slot


def variant_context(spec: VariantBriefDoc) -> VariantContext:
    """What the router needs to know about a variant: route rules and the campaign budget."""
    return VariantContext(
        campaign_id=spec.campaign_id, budget_usd=spec.budget_usd, tier=spec.tier, locale=spec.locale, partition_key=spec.partition_key
    )


@dataclass(frozen=True)
class StageCall:
    """What a stage's work gets for one variant: the router session, the artifact store,
    the stage's settings, the variant's brief, the manifests bound to its input slots,
    and the routed task it calls."""

    session: RouterSession
    artifacts: BaseArtifactStore
    settings: Any
    partition_key: str
    spec: VariantBriefDoc
    inputs: Mapping[str, Manifest]
    task: str | None = None
    # One provider id per answer rejected by the stage's checks so far (quality-aware fallback).
    rejected: tuple[str, ...] = ()
    # The provenance of every answer this work got from the router, in order.
    answers: list[Any] = field(default_factory=list)
    # A route experiment's arm to ask (None: the variant's own): a shadow's candidate make.
    arm: str | None = None
    # The stage's name in the pipeline, and the reviewers' verdicts (assets/approvals.Reviews)
    # for the kinds that read them (approval).
    stage: str = ""
    reviews: Any = None

    def variant(self) -> VariantContext:
        return variant_context(self.spec)

    async def call_model(self, request: Any, *blobs: bytes) -> Any:
        """Ask the router for this stage's task, seeded and budgeted for the variant."""
        if self.task is None:
            raise RuntimeError("this stage has no routed task")
        routed = await self.session.call(
            self.task, request, *blobs, seed=self.spec.seed, variant=self.variant(), rejected=self.rejected, arm=self.arm
        )
        self.answers.append(routed.provenance)
        return routed

    async def input_bytes(self, slot: str, ref: ArtifactRef) -> bytes:
        """The bytes of an input's file, checked to be what its manifest says they are; else
        `BrokenInput` (the artifact store already verifies the sha256)."""
        data = await self.off_loop(self.artifacts.get, ref)
        problem = media_mismatch(data, ref.media_type)
        if problem:
            raise BrokenInput(slot, problem)
        return data

    async def off_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """CPU and disk work (decoding, thumbnails, storing) in a thread, so the
        event loop keeps issuing the other variants' calls meanwhile."""
        return await asyncio.to_thread(fn, *args, **kwargs)


StageWork = Callable[[StageCall], Awaitable[tuple[Manifest, Mapping[str, Any]]]]


@dataclass(frozen=True)
class StageKind:
    name: str
    description: str
    inputs: Mapping[str, type]  # input slot -> the manifest type it reads
    output: type  # the manifest type it makes
    task: TaskSpec | None  # what it calls; the pipeline names the routed task (default: the spec's name)
    work: StageWork
    settings: type[StageSettings] = NoSettings
    checks: tuple[CheckKind, ...] = ()
    accelerator: bool = False  # its adapters run torch models: worth a GPU
    kinds: frozenset[str] = frozenset()  # Dagster kinds (UI badges)
    # Files it contributes to the campaign roll-up: (stage name, manifest) -> {label: ref}.
    rollup_files: Callable[[str, Any], Mapping[str, ArtifactRef]] = lambda stage, manifest: {}
    # The picture the roll-up's contact sheet shows for a variant, if this kind makes one.
    contact_sheet_tile: Callable[[Any], ArtifactRef] | None = None
    code_revision: str = "1"  # bumped when the kind's own code changes what it produces
    # What else of the variant's brief its output depends on, beyond the fields every stage's
    # input fingerprint has (the approval kind: the brief's `approval` mode); None: nothing.
    fingerprint_extra: Callable[[VariantBriefDoc], Any] | None = None

    def check(self, name: str) -> CheckKind:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


class ChosenCheck(NamedTuple):
    """A check as a pipeline file picks it for a stage."""

    name: str
    blocking: bool
    judges_answer: bool


@dataclass(frozen=True)
class StageCheck:
    """A check as a pipeline runs it: on one stage, blocking or not, judging the provider's
    answer or not, with that stage's settings."""

    stage: str
    asset_key: dg.AssetKey
    kind: CheckKind
    blocking: bool
    settings: Any
    judges_answer: bool = True

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset_key, self.kind.name)

    def description(self) -> str:
        return self.kind.describe(self.settings)


@dataclass(frozen=True)
class PipelineStage:
    """One stage of a pipeline: a kind instantiated with its inputs, settings, task and checks."""

    name: str
    kind: StageKind
    inputs: Mapping[str, str]  # input slot -> the stage that feeds it
    settings: StageSettings
    task: str | None
    checks: tuple[ChosenCheck, ...]
    description: str

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.inputs.values()))


@dataclass(frozen=True)
class PipelineJob:
    name: str
    from_stages: tuple[str, ...]  # these stages and everything downstream of them
    description: str


# Variants per run unless a pipeline file says otherwise: enough that one run keeps a provider's
# 8 slots busy and pays its fixed costs (start, model loads, event log) for many variants, few
# enough that a 1,024-variant campaign is 64 runs to spread over workers (docs/deploy.md, Sizing).
DEFAULT_MAX_VARIANTS_PER_RUN = 16

# The approval stage kind (assets/stage_kinds/approval.py) and its one input slot.
APPROVAL_KIND = "approval"
APPROVAL_SUBJECT_SLOT = "subject"

# The assets every pipeline has besides its stages: no stage may take these names.
BRIEF_ASSET = "brief"
ROLLUP_ASSET = "campaign_rollup"
# Beside the roll-up when the routing runs an experiment on one of the pipeline's tasks (assets/report.py).
REPORT_ASSET = "campaign_report"


@dataclass(frozen=True)
class Pipeline:
    name: str
    source: str  # the file it came from (errors and the UI name it)
    description: str
    key_prefix: tuple[str, ...]
    partitions_name: str
    stages: tuple[PipelineStage, ...]  # in dependency order
    jobs: tuple[PipelineJob, ...] = ()
    # Variants per run: the sensor, the repair schedule, `make demo` and UI backfills cut runs this size.
    max_variants_per_run: int = DEFAULT_MAX_VARIANTS_PER_RUN
    # The routing config its tasks were checked against (None in tests that build pipelines by hand).
    routing: RoutingConfig | None = field(default=None, compare=False, repr=False)

    @property
    def gates(self) -> tuple[PipelineStage, ...]:
        """The approval stages (kind `approval`): each holds what reads its subject until a verdict."""
        return tuple(stage for stage in self.stages if stage.kind.name == APPROVAL_KIND)

    def gate_subject(self, gate: str) -> str:
        """The stage an approval stage judges."""
        return self.stage(gate).inputs[APPROVAL_SUBJECT_SLOT]

    def gates_of(self, stage: str) -> tuple[str, ...]:
        """The approval stages that hold `stage` (it reads their subject, so it reads them too)."""
        return tuple(gate.name for gate in self.gates if gate.name in self.stage(stage).inputs.values() and gate.name != stage)

    def downstream(self, names: Sequence[str]) -> tuple[str, ...]:
        """`names` and every stage that reads them, directly or not, in dependency order."""
        found = set(names)
        for stage in self.stages:
            if found & set(stage.inputs.values()):
                found.add(stage.name)
        return tuple(stage.name for stage in self.stages if stage.name in found)

    @property
    def routed_tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stage.task for stage in self.stages if stage.task is not None))

    def locale_problems(self, variants: Any) -> list[str]:
        """One problem per variant whose locale some routed task of this pipeline has no provider
        for (`variants[i]`: locale, tasks and their routes), so a brief is refused before any work."""
        if self.routing is None:
            return []
        problems = []
        for index, variant in enumerate(variants):
            unserved = self.routing.unserved_tasks(list(self.routed_tasks), variant.tier, variant.locale)
            if unserved:
                tasks = "; ".join(f"{task} (route: {', '.join(route)})" for task, route in unserved.items())
                problems.append(
                    f"variants[{index}].locale: variant {variant.id!r} asks for {variant.locale}, which no provider "
                    f"serves for task {tasks} in the {self.name!r} pipeline's routing"
                )
        return problems

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, name])

    @property
    def brief_key(self) -> dg.AssetKey:
        return self.key(BRIEF_ASSET)

    @property
    def group_name(self) -> str:
        """The UI's asset group: one per pipeline, so each shows as one box in the graph."""
        return self.name

    def named(self, base: str) -> str:
        """A Dagster name (op, job, schedule) unique to this pipeline."""
        return "__".join([*self.key_prefix, base])

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def stage(self, name: str) -> PipelineStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r}")

    @property
    def final_stage(self) -> PipelineStage:
        return self.stages[-1]

    @property
    def routed_stages(self) -> tuple[PipelineStage, ...]:
        return tuple(stage for stage in self.stages if stage.task is not None)

    @property
    def produce_job_name(self) -> str:
        return f"produce_{self.name}"

    @property
    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.partitions_name)  # equal by name

    def checks(self, settings_by_stage: Mapping[str, Any] | None = None) -> tuple[StageCheck, ...]:
        """The pipeline's checks, with each stage's settings (the pipeline's, or a run's)."""
        found = []
        for stage in self.stages:
            settings = (settings_by_stage or {}).get(stage.name, stage.settings)
            for name, blocking, judges_answer in stage.checks:
                kind = stage.kind.check(name)
                found.append(
                    StageCheck(stage.name, self.key(stage.name), kind, blocking, settings, judges_answer and stage.task is not None)
                )
        return tuple(found)
