"""The routing config: which provider does each task, validated when definitions load.

```yaml
version: 1
providers:
  local-image: {adapter: local-procedural-image, max_concurrency: 2}
tasks:
  image: {route: [local-image]}
```

An unknown adapter, an unknown field, a route naming a missing provider, or a
provider on the wrong task is an error at load that names the file and field.

`experiments` tries a candidate route against a task's route: on a share of
the variants (each variant's arm drawn from a hash of the experiment's name
and its partition key, so re-runs keep their arm) or in shadow (both routes
for every variant, only the control's output flows on). docs/routing.md,
"Experiments".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from model_adapters.locales import normalize_locale, serves_locale
from model_adapters.registry import DEFAULT_WORDS_PER_SECOND, adapter_kind
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import Price, Task

ProviderId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    adapter: str
    model: str | None = None
    base_url: str | None = None
    # The NAME of the environment variable that holds the key, never the key.
    api_key_env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    # Calls in flight at once, across every variant of every worker sharing the limits.
    max_concurrency: int = Field(default=1, ge=1, le=256)
    # Calls started in any sliding minute, across every worker (None: no limit).
    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    price: Price = Price()
    # Hosts, besides base_url's, that media URLs returned by this provider may point to.
    allowed_hosts: tuple[str, ...] = ()
    # Adapter-specific settings (e.g. a ComfyUI workflow file, an output format).
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # The locales this provider serves (BCP 47 tags, or bare languages for all their regions);
    # omitted: what its adapter kind declares (model_adapters/registry.py), for hosted ones any.
    locales: tuple[str, ...] | None = Field(default=None, min_length=1)
    # A voice provider's speaking rate in words per second (sizes the scripts it will read);
    # omitted: the adapter kind's measured rate, or 2.5 for a hosted voice.
    words_per_second: float | None = Field(default=None, gt=0.5, le=6.0)

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        adapter_kind(value)  # raises with the list of known adapters
        return value

    @field_validator("locales")
    @classmethod
    def _normalized_locales(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(normalize_locale(tag) for tag in value)

    def speaking_rate(self) -> float:
        """A voice provider's words per second: declared here, else measured for its adapter kind."""
        return self.words_per_second or adapter_kind(self.adapter).words_per_second or DEFAULT_WORDS_PER_SECOND

    def served_locales(self) -> frozenset[str] | None:
        """What it serves: declared here, else by its adapter kind (None: any locale)."""
        return frozenset(self.locales) if self.locales is not None else adapter_kind(self.adapter).locales


class RouteRule(_Strict):
    """Use `route` instead of the task's default when the variant matches every condition given."""

    tier: str | None = None
    locale: str | None = None
    route: tuple[ProviderId, ...] = Field(min_length=1)

    @field_validator("locale")
    @classmethod
    def _normalized_locale(cls, value: str | None) -> str | None:
        return None if value is None else normalize_locale(value)

    @model_validator(mode="after")
    def _has_a_condition(self) -> RouteRule:
        if self.tier is None and self.locale is None:
            raise ValueError("a rule needs a condition: tier and/or locale")
        return self

    def matches(self, tier: str | None, locale: str | None) -> bool:
        # A rule's bare language (`pt`) matches each of its regions, as a provider's locales do.
        return (self.tier is None or self.tier == tier) and (
            self.locale is None or (locale is not None and serves_locale((self.locale,), locale))
        )


class TaskRoute(_Strict):
    route: tuple[ProviderId, ...] = Field(min_length=1)
    rules: tuple[RouteRule, ...] = ()
    # Overrides defaults.quality_retries for this task.
    quality_retries: int | None = Field(default=None, ge=0, le=5)

    def choose(self, tier: str | None, locale: str | None) -> tuple[str, ...]:
        for rule in self.rules:
            if rule.matches(tier, locale):
                return rule.route
        return self.route


Arm = Literal["control", "candidate"]


def arm_bucket(experiment: str, partition_key: str) -> float:
    """Where a variant falls in [0, 1) for an experiment: a sha256 of the experiment's name and
    the partition key, so a re-run, another worker or another process draws the same arm."""
    digest = hashlib.sha256(f"{experiment}\n{partition_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Experiment(_Strict):
    """A candidate route tried against a task's route (the control).

    `share`: that share of the variants (0..1) takes the candidate route, the rest the control;
    `mode: shadow`: every variant runs both, only the control's output flows on, the
    candidate's is stored and measured beside it."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    control: tuple[ProviderId, ...] = Field(min_length=1)
    candidate: tuple[ProviderId, ...] = Field(min_length=1)
    share: float | None = Field(default=None, ge=0, le=1)
    mode: Literal["share", "shadow"] = "share"

    @model_validator(mode="after")
    def _share_or_shadow(self) -> Experiment:
        if self.mode == "shadow" and self.share is not None:
            raise ValueError("both share and mode: shadow; a shadow experiment runs both routes for every variant, so it takes no share")
        if self.mode == "share" and self.share is None:
            raise ValueError("needs share (0..1 of the variants to the candidate) or mode: shadow")
        if self.control == self.candidate:
            raise ValueError("control and candidate are the same route: nothing to compare")
        return self

    def arm(self, partition_key: str | None) -> Arm:
        """The arm whose output flows on for this variant (shadow: always the control). Without a
        partition key (a call outside any variant) the control: no arm is drawn at random."""
        if self.mode == "shadow" or partition_key is None:
            return "control"
        assert self.share is not None  # the validator requires a share unless mode is shadow
        return "candidate" if arm_bucket(self.name, partition_key) < self.share else "control"

    def route(self, arm: Arm) -> tuple[str, ...]:
        return self.candidate if arm == "candidate" else self.control


@dataclass(frozen=True)
class RouteChoice:
    """The route a variant's call takes, and the experiment arm that decided it (None: none)."""

    route: tuple[str, ...]
    experiment: str | None = None
    arm: Arm | None = None


def choose_route(
    task_route: TaskRoute,
    experiment: Experiment | None,
    tier: str | None,
    locale: str | None,
    partition_key: str | None,
    arm: Arm | None = None,
) -> RouteChoice:
    """A matching rule's route (rules win: an experiment runs on the variants that take the
    task's route), else the experiment arm's route (`arm` given: that arm, the shadow's
    candidate call), else the task's route."""
    for rule in task_route.rules:
        if rule.matches(tier, locale):
            if arm == "candidate":
                raise ValueError("a variant that a route rule matched is in no experiment: it has no candidate arm")
            return RouteChoice(rule.route)
    if experiment is None:
        if arm == "candidate":
            raise ValueError("the task has no experiment: no candidate arm")
        return RouteChoice(task_route.route)
    arm = arm or experiment.arm(partition_key)
    return RouteChoice(experiment.route(arm), experiment.name, arm)


class RetryDefaults(_Strict):
    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, ge=0, le=60)
    max_delay_s: float = Field(default=20.0, ge=0, le=600)
    retry_after_cap_s: float = Field(default=60.0, ge=0, le=3600)


class CooldownDefaults(_Strict):
    default_s: float = Field(default=30.0, ge=0, le=3600)
    auth_s: float = Field(default=300.0, ge=0, le=86400)
    failures_to_trip: int = Field(default=3, ge=1, le=100)
    # A misconfigured provider (404/405, or the same 400 this many times in a row) is skipped this long.
    config_error_s: float = Field(default=300.0, ge=0, le=86400)
    config_errors_to_trip: int = Field(default=2, ge=1, le=100)


class RoutingDefaults(_Strict):
    retry: RetryDefaults = RetryDefaults()
    cooldown: CooldownDefaults = CooldownDefaults()
    cache: bool = True
    # An answer that fails a blocking check that judges answers is a failed attempt of the
    # provider that made it: asked again with a new seed this many times, then the next
    # provider in the route (docs/routing.md, "Quality-aware fallback").
    quality_retries: int = Field(default=1, ge=0, le=5)
    # How long a worker's hold on a provider slot lasts without renewal: a worker that dies
    # frees its slots after this (resources/policies/shared_limits.py).
    slot_lease_s: float = Field(default=30.0, ge=2, le=600)


class RoutingConfig(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    defaults: RoutingDefaults = RoutingDefaults()
    providers: dict[ProviderId, ProviderConfig] = Field(min_length=1)
    # Routes for the tasks the loaded pipelines use (a pipeline naming a task with no
    # route fails at load, orchestration/pipelines.py); other tasks need none.
    tasks: dict[Task, TaskRoute]
    # Per task, a candidate route tried against the task's route (docs/routing.md, "Experiments").
    experiments: dict[Task, Experiment] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _routes_are_consistent(self) -> RoutingConfig:
        for task, task_route in self.tasks.items():
            if task not in TASK_SPECS:
                raise ValueError(f"tasks.{task}: unknown task; known tasks: {', '.join(sorted(TASK_SPECS))}")
            routes = [(f"tasks.{task}.route", task_route.route)]
            routes += [(f"tasks.{task}.rules[{i}].route", rule.route) for i, rule in enumerate(task_route.rules)]
            experiment = self.experiments.get(task)
            if experiment is not None:
                routes += [(f"experiments.{task}.control", experiment.control), (f"experiments.{task}.candidate", experiment.candidate)]
            for where_route, route in routes:
                for index, provider_id in enumerate(route):
                    where = f"{where_route}[{index}]"
                    if provider_id not in self.providers:
                        raise ValueError(f"{where}: unknown provider {provider_id!r}")
                    kind = adapter_kind(self.providers[provider_id].adapter)
                    if kind.task != task:
                        raise ValueError(
                            f"{where}: provider {provider_id!r} uses adapter {kind.name!r}, which does the {kind.task!r} task, not {task!r}"
                        )
        named: dict[str, str] = {}
        for task, experiment in self.experiments.items():
            if task not in TASK_SPECS:
                raise ValueError(f"experiments.{task}: unknown task; known tasks: {', '.join(sorted(TASK_SPECS))}")
            if task not in self.tasks:
                raise ValueError(
                    f"experiments.{task}: task {task!r} has no route (tasks.{task}); an experiment's control is the task's route"
                )
            if experiment.control != self.tasks[task].route:
                raise ValueError(
                    f"experiments.{task}.control: [{', '.join(experiment.control)}] is not the task's route "
                    f"(tasks.{task}.route: [{', '.join(self.tasks[task].route)}]); the control arm is what the task makes today"
                )
            if experiment.name in named:
                raise ValueError(f"experiments.{task}.name: {experiment.name!r} is the name of experiments.{named[experiment.name]} too")
            named[experiment.name] = task
        for provider_id, provider in self.providers.items():
            # A price in a unit the task is not billed by would be estimated at $0: never budgeted.
            spec = TASK_SPECS[adapter_kind(provider.adapter).task]
            billed = {unit for unit, value in provider.price.model_dump().items() if value}
            if billed - spec.price_units:
                raise ValueError(
                    f"providers.{provider_id}.price: {', '.join(sorted(billed - spec.price_units))} is not how the "
                    f"{spec.name!r} task is priced; use {', '.join(sorted(spec.price_units))}"
                )
        return self

    def require_routes(self, tasks: dict[str, str], source: str) -> None:
        """Every task in `tasks` ({task: who needs it}) has a route here; else one error naming them all."""
        missing = {task: who for task, who in tasks.items() if task not in self.tasks}
        if missing:
            raise ValueError("; ".join(f"{who}: task {task!r} has no route in {source}" for task, who in sorted(missing.items())))

    def route(self, task: Task) -> tuple[str, ...]:
        return self.tasks[task].route

    def route_choice(
        self, task: Task, tier: str | None, locale: str | None, partition_key: str | None = None, arm: Arm | None = None
    ) -> RouteChoice:
        """The route of a variant's call for `task`, with its experiment arm (see `choose_route`)."""
        return choose_route(self.tasks[task], self.experiments.get(task), tier, locale, partition_key, arm)

    def serves(self, provider_id: str, locale: str) -> bool:
        return serves_locale(self.providers[provider_id].served_locales(), locale)

    def unserved_tasks(self, tasks: list[Task], tier: str | None, locale: str) -> dict[Task, tuple[str, ...]]:
        """{task: its route} for each of `tasks` whose route for this tier and locale has no
        provider that serves the locale (what a brief's variant cannot be made with)."""
        unserved = {}
        for task in tasks:
            routes = [self.tasks[task].choose(tier, locale)]
            experiment = self.experiments.get(task)
            if experiment is not None and experiment.mode == "share" and self.route_choice(task, tier, locale).experiment:
                # Any variant may draw the candidate arm, whose output then flows on: it must serve it too.
                routes.append(experiment.candidate)
            for route in routes:
                if not any(self.serves(provider_id, locale) for provider_id in route):
                    unserved[task] = route
                    break
        return unserved

    def speaking_rate(self, tier: str | None, locale: str) -> float:
        """Words per second of the voice that will read this variant: the first provider of its
        voice route that serves the locale (the one that answers unless it fails)."""
        if "voice" in self.tasks:
            for provider_id in self.tasks["voice"].choose(tier, locale):
                if self.serves(provider_id, locale):
                    return self.providers[provider_id].speaking_rate()
        return DEFAULT_WORDS_PER_SECOND

    def task_identity(self, task: Task) -> str:
        """A short, stable hash of what decides a task's output: the routes'
        providers, adapters, adapter versions, models, endpoints and options
        (not concurrency, timeouts, prices or keys). It is the asset's code version."""
        task_route = self.tasks[task]

        def describe(route: tuple[str, ...]) -> list[dict[str, object]]:
            described = []
            for provider_id in route:
                provider = self.providers[provider_id]
                entry: dict[str, object] = {
                    "provider": provider_id,
                    "adapter": provider.adapter,
                    "adapter_version": adapter_kind(provider.adapter).version,
                    "model": provider.model,
                    "base_url": provider.base_url,
                    "options": provider.options,
                }
                # Only when declared, so configs that declare nothing keep their code versions.
                if provider.locales is not None:
                    entry["locales"] = sorted(provider.locales)
                described.append(entry)
            return described

        parts: dict[str, object] = {
            "route": describe(task_route.route),
            "rules": [{"tier": r.tier, "locale": r.locale, "route": describe(r.route)} for r in task_route.rules],
        }
        experiment = self.experiments.get(task)
        # Only when there is one, so configs without experiments keep their code versions. A share
        # decides which variants get which route, so it is part of what the stage makes; a shadow
        # changes nothing that flows on, but it is shown as a change all the same (never silent).
        if experiment is not None:
            parts["experiment"] = {
                "name": experiment.name,
                "mode": experiment.mode,
                "share": experiment.share,
                "candidate": describe(experiment.candidate),
            }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


class RoutingConfigError(ValueError):
    pass


def validation_problems(exc: ValidationError, prefix: str = "", whole: str = "(config)") -> list[str]:
    """`field.path[0]: message` per error of a config file (`whole` when it is about the file itself)."""
    problems = []
    for error in exc.errors():
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]).replace(".[", "[") or whole
        problems.append(f"{prefix}{path}: {error['msg'].removeprefix('Value error, ')}")
    return problems


def parse_routing_config(text: str, source: str = "<routing config>") -> RoutingConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingConfigError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RoutingConfigError(f"{source}: expected a mapping at the top level")
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise RoutingConfigError(f"{source}: " + "; ".join(validation_problems(exc))) from None


def load_routing_config(path: str | Path) -> RoutingConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read routing config: {exc.strerror}") from None
    return parse_routing_config(text, str(path))
