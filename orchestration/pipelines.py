"""Pipeline files: config/pipelines/*.yaml, validated and resolved against the stage kinds and the routing.

```yaml
name: stills
description: Display ads.
stages:
  - {name: concept, kind: concept}
  - {name: draft_image, kind: image, settings: {short_side: 576}}
  - {name: refined_image, kind: refine, inputs: {image: draft_image}}
jobs:
  - {name: regenerate_stills, from_stages: [draft_image], description: The images again.}
```

A stage instantiates a kind (assets/stage_kinds/): `inputs` binds each of
the kind's input slots to another stage (a slot left out binds to the stage
of the same name), `settings` are the kind's settings, `task` the routed task
it calls (default: the kind's), `checks` the kind's checks to run (default:
all, as the kind declares them; `{name: x, blocking: false}` to demote one).
The JSON Schema of the file is config/pipelines/pipeline.schema.json.

Everything is checked when the definitions load, and an error names the file,
the stage and the field: an unknown stage kind, an input slot bound to no
stage (or to one that makes another type of manifest), a cycle, settings the
kind does not take, a task the kind cannot call or that the routing config
has no route for, an unknown check.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from assets.stage_kinds import stage_kinds
from assets.stages import (
    APPROVAL_KIND,
    APPROVAL_SUBJECT_SLOT,
    BRIEF_ASSET,
    DEFAULT_MAX_VARIANTS_PER_RUN,
    ROLLUP_ASSET,
    ChosenCheck,
    Pipeline,
    PipelineJob,
    PipelineStage,
)
from model_adapters.registry import validate_adapter_kinds
from model_adapters.tasks import TASK_SPECS, validate_task_specs
from resources.routing_config import RoutingConfig, validation_problems

PipelineName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
StageName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
# Asset names every pipeline has besides its stages.
RESERVED_STAGE_NAMES = frozenset({BRIEF_ASSET, ROLLUP_ASSET, "campaign_report"})  # assets/stages.py REPORT_ASSET
SCHEMA_FILE = "pipeline.schema.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckChoice(_Strict):
    name: str = Field(description="One of the checks the stage's kind offers.")
    blocking: bool | None = Field(default=None, description="Override the kind's default (a non-blocking check only reports).")
    judges_answer: bool | None = Field(
        default=None,
        description=(
            "Override the kind's default: whether a blocking failure on a routed stage is a failed attempt of the provider "
            "(retried with a new seed, then the next provider in the route)."
        ),
    )


class StageSpec(_Strict):
    name: StageName = Field(description="The stage's asset name in this pipeline.")
    kind: str = Field(description="A stage kind (assets/stage_kinds/): concept, image, refine, voiceover, captions, video, ...")
    inputs: dict[str, StageName] = Field(
        default_factory=dict, description="Input slot -> the stage that feeds it; a slot left out binds to the stage of its own name."
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="The kind's settings (the launchpad can override them per run).")
    task: str | None = Field(default=None, description="The routed task the stage calls; default: the kind's own task.")
    checks: list[str | CheckChoice] | None = Field(default=None, description="The kind's checks to run; default: all of them.")
    description: str | None = Field(default=None, description="Shown in the UI; default: the kind's description.")


class JobSpec(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,60}$")]
    from_stages: list[StageName] = Field(description="These stages and everything downstream of them.", min_length=1)
    description: str


class PipelineSpec(_Strict):
    """A pipeline file."""

    name: PipelineName
    description: str
    key_prefix: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]] | None = Field(
        default=None, description="Asset key prefix; default: [name]. The campaign pipeline keeps [] (its keys predate pipelines)."
    )
    partitions: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,60}$")] | None = Field(
        default=None, description="Name of the dynamic partitions (one per variant); default: <name>_variants."
    )
    stages: list[StageSpec] = Field(min_length=1)
    jobs: list[JobSpec] = Field(default_factory=list, description="Jobs besides produce_<name> (which makes every stage).")
    max_variants_per_run: int = Field(
        default=DEFAULT_MAX_VARIANTS_PER_RUN,
        ge=1,
        le=1024,
        description=(
            "Variants per run: a campaign of N changed variants is ceil(N / this) runs (the brief sensor, the repair "
            "schedule, make demo and UI backfills), spread over the deployment's run workers."
        ),
    )


class PipelineError(ValueError):
    """A pipeline file that cannot be used: the message names the file, the stage and the field."""


def _describe(exc: ValidationError, prefix: str = "") -> list[str]:
    return validation_problems(exc, prefix, whole="(pipeline)")


def pipeline_json_schema() -> dict:
    schema = PipelineSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "campaign-studio pipeline"
    return schema


def parse_pipeline_spec(text: str, source: str) -> PipelineSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: expected a mapping at the top level")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"{source}: " + "; ".join(_describe(exc))) from None


def resolve_pipeline(spec: PipelineSpec, source: str, routing: RoutingConfig, routing_source: str) -> Pipeline:
    """The pipeline's stages as kinds with bound inputs, validated settings and routed tasks, in
    dependency order; every problem found, each naming the stage and field."""
    kinds = stage_kinds()
    problems: list[str] = []
    names = [stage.name for stage in spec.stages]
    for index, name in enumerate(names):
        if name in RESERVED_STAGE_NAMES:
            problems.append(f"stages[{index}].name: {name!r} is reserved (every pipeline has a brief and a campaign_rollup)")
        elif names.index(name) != index:
            problems.append(f"stages[{index}].name: {name!r} is used by stages[{names.index(name)}] too")
    by_name = {stage.name: stage for stage in spec.stages}

    resolved: dict[str, PipelineStage] = {}
    for index, stage in enumerate(spec.stages):
        where = f"stages[{index}] ({stage.name})"
        kind = kinds.get(stage.kind)
        if kind is None:
            problems.append(f"{where}.kind: unknown stage kind {stage.kind!r}; known kinds: {', '.join(sorted(kinds))}")
            continue
        inputs: dict[str, str] = {}
        for slot in stage.inputs:
            if slot not in kind.inputs:
                problems.append(
                    f"{where}.inputs.{slot}: the {kind.name!r} kind has no input {slot!r}; its inputs: {', '.join(kind.inputs) or 'none'}"
                )
        for slot, wanted in kind.inputs.items():
            source_stage = stage.inputs.get(slot, slot)
            if source_stage not in by_name:
                problems.append(
                    f"{where}.inputs.{slot}: no stage {source_stage!r} produces it (the {kind.name!r} kind reads a {wanted.__name__})"
                    + ("" if slot in stage.inputs else f"; bind it: inputs: {{{slot}: <stage>}}")
                )
                continue
            upstream_kind = kinds.get(by_name[source_stage].kind)
            if upstream_kind is not None and not issubclass(upstream_kind.output, wanted):
                problems.append(
                    f"{where}.inputs.{slot}: stage {source_stage!r} makes a {upstream_kind.output.__name__}, "
                    f"the {kind.name!r} kind reads a {wanted.__name__}"
                )
                continue
            inputs[slot] = source_stage
        unknown = sorted(set(stage.settings) - set(kind.settings.model_fields))
        for name in unknown:  # Dagster's Config ignores unknown fields: a typo would pass silently
            problems.append(
                f"{where}.settings.{name}: the {kind.name!r} kind has no setting {name!r}; "
                f"its settings: {', '.join(kind.settings.model_fields) or 'none'}"
            )
        try:
            settings = kind.settings.model_validate(stage.settings)
        except ValidationError as exc:
            problems += _describe(exc, f"{where}.settings.")
            continue
        task = stage.task
        if kind.task is None:
            if task is not None:
                problems.append(f"{where}.task: the {kind.name!r} kind calls no model, so it takes no task")
        else:
            task = task or kind.task.name
            spec_of_task = TASK_SPECS.get(task)
            if spec_of_task is None:
                problems.append(f"{where}.task: unknown task {task!r}; known tasks: {', '.join(sorted(TASK_SPECS))}")
                continue
            if (spec_of_task.request_type, spec_of_task.result_type) != (kind.task.request_type, kind.task.result_type):
                problems.append(
                    f"{where}.task: task {task!r} takes a {spec_of_task.request_type.__name__}; "
                    f"the {kind.name!r} kind makes a {kind.task.request_type.__name__}"
                )
                continue
            if task not in routing.tasks:
                problems.append(f"{where}.task: task {task!r} has no route in {routing_source}")
        offered = {check.name: check for check in kind.checks}
        chosen: list[ChosenCheck] = []
        for position, choice in enumerate(stage.checks if stage.checks is not None else list(offered)):
            choice = CheckChoice(name=choice) if isinstance(choice, str) else choice
            if choice.name not in offered:
                problems.append(
                    f"{where}.checks[{position}]: the {kind.name!r} kind has no check {choice.name!r}; it offers: {', '.join(offered) or 'none'}"
                )
                continue
            default = offered[choice.name]
            chosen.append(
                ChosenCheck(
                    choice.name,
                    default.blocking if choice.blocking is None else choice.blocking,
                    default.judges_answer if choice.judges_answer is None else choice.judges_answer,
                )
            )
        resolved[stage.name] = PipelineStage(
            name=stage.name,
            kind=kind,
            inputs=inputs,
            settings=settings,
            task=task,
            checks=tuple(chosen),
            description=stage.description or kind.description,
        )

    _hold_behind_gates(resolved, spec, problems)
    order = _dependency_order([s.name for s in spec.stages], {s.name: set(s.inputs.values()) for s in resolved.values()}, problems)
    for index, job in enumerate(spec.jobs):
        for position, name in enumerate(job.from_stages):
            if name not in by_name:
                problems.append(f"jobs[{index}] ({job.name}).from_stages[{position}]: no stage {name!r}")
    if problems:
        raise PipelineError(f"{source}: " + "; ".join(problems))
    prefix = tuple(spec.key_prefix) if spec.key_prefix is not None else (spec.name,)
    return Pipeline(
        name=spec.name,
        source=source,
        description=spec.description,
        key_prefix=prefix,
        partitions_name=spec.partitions or f"{spec.name}_variants",
        stages=tuple(resolved[name] for name in order),
        jobs=tuple(PipelineJob(job.name, tuple(job.from_stages), job.description) for job in spec.jobs),
        max_variants_per_run=spec.max_variants_per_run,
        routing=routing,
    )


def _hold_behind_gates(resolved: dict[str, PipelineStage], spec: PipelineSpec, problems: list[str]) -> None:
    """Every stage that reads an approval stage's subject reads the approval stage too (one more
    input, named after it): so it waits for the verdict, and the asset graph shows the gate."""
    for index, gate in enumerate(spec.stages):
        stage = resolved.get(gate.name)
        if stage is None or stage.kind.name != APPROVAL_KIND:
            continue
        subject = stage.inputs.get(APPROVAL_SUBJECT_SLOT)
        if subject is None:
            continue  # already a problem: the slot is bound to no stage
        if resolved.get(subject) is not None and resolved[subject].kind.name == APPROVAL_KIND:
            problems.append(
                f"stages[{index}] ({gate.name}).inputs.{APPROVAL_SUBJECT_SLOT}: {subject!r} is an approval stage; approve a stage that makes something"
            )
            continue
        for name, reader in list(resolved.items()):
            if name == gate.name or subject not in reader.inputs.values() or reader.kind.name == APPROVAL_KIND:
                continue
            if gate.name in reader.inputs:
                problems.append(
                    f"stages: {name!r} has an input slot named {gate.name!r}, the approval stage that holds it; rename the stage"
                )
                continue
            resolved[name] = dataclasses.replace(reader, inputs={**reader.inputs, gate.name: gate.name})


def _dependency_order(names: list[str], reads: dict[str, set[str]], problems: list[str]) -> list[str]:
    """Stages in file order, each after the stages it reads; a cycle is a problem naming its stages."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done" or name not in reads:
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name) :] + [name]
            problems.append(f"stages: a cycle: {' -> '.join(cycle)} (each reads the next)")
            return
        state[name] = "visiting"
        for upstream in sorted(reads[name], key=names.index):
            visit(upstream, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in names:
        visit(name, [])
    return order


def load_pipeline(path: str | Path, routing: RoutingConfig, routing_source: str) -> Pipeline:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read pipeline file: {exc.strerror}") from None
    return resolve_pipeline(parse_pipeline_spec(text, str(path)), str(path), routing, routing_source)


def pipeline_for(brief: Any, pipelines: dict[str, Pipeline]) -> Pipeline:
    """The loaded pipeline a brief names (its `pipeline` field), when its routes serve every
    variant's locale; a PipelineError naming the field (and the variant and tasks) otherwise."""
    if brief.pipeline not in pipelines:
        raise PipelineError(f"pipeline: unknown pipeline {brief.pipeline!r}; loaded pipelines: {', '.join(sorted(pipelines))}")
    pipeline = pipelines[brief.pipeline]
    problems = pipeline.locale_problems(brief.variants)
    if problems:
        raise PipelineError("; ".join(problems))
    return pipeline


def pipeline_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.yaml") if p.is_file())


def load_pipelines(folder: str | Path, routing: RoutingConfig, routing_source: str) -> dict[str, Pipeline]:
    """Every pipeline file of `folder`, resolved; names, key prefixes, partitions and job names unique."""
    validate_task_specs()
    validate_adapter_kinds()
    folder = Path(folder)
    files = pipeline_files(folder)
    if not files:
        raise PipelineError(f"{folder}: no pipeline files (*.yaml)")
    pipelines: dict[str, Pipeline] = {}
    claimed: dict[tuple[str, Any], str] = {}
    for path in files:
        pipeline = load_pipeline(path, routing, routing_source)
        claims = [("name", pipeline.name), ("key_prefix", pipeline.key_prefix), ("partitions", pipeline.partitions_name)]
        claims += [("job", job) for job in (pipeline.produce_job_name, *(j.name for j in pipeline.jobs))]
        for field_name, value in claims:
            if (field_name, value) in claimed:
                raise PipelineError(f"{path}: {field_name}: {value!r} is already used by {claimed[(field_name, value)]}")
            claimed[(field_name, value)] = str(path)
        pipelines[pipeline.name] = pipeline
    return pipelines


def write_json_schema(folder: str | Path) -> Path:
    path = Path(folder) / SCHEMA_FILE
    path.write_text(json.dumps(pipeline_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
