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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

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
    def _has_a_condition(self) -> "RouteRule":
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

    @model_validator(mode="after")
    def _routes_are_consistent(self) -> "RoutingConfig":
        for task, task_route in self.tasks.items():
            if task not in TASK_SPECS:
                raise ValueError(f"tasks.{task}: unknown task; known tasks: {', '.join(sorted(TASK_SPECS))}")
            routes = [(f"tasks.{task}.route", task_route.route)]
            routes += [(f"tasks.{task}.rules[{i}].route", rule.route) for i, rule in enumerate(task_route.rules)]
            for where_route, route in routes:
                for index, provider_id in enumerate(route):
                    where = f"{where_route}[{index}]"
                    if provider_id not in self.providers:
                        raise ValueError(f"{where}: unknown provider {provider_id!r}")
                    kind = adapter_kind(self.providers[provider_id].adapter)
                    if kind.task != task:
                        raise ValueError(
                            f"{where}: provider {provider_id!r} uses adapter {kind.name!r}, "
                            f"which does the {kind.task!r} task, not {task!r}"
                        )
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
            raise ValueError(
                "; ".join(f"{who}: task {task!r} has no route in {source}" for task, who in sorted(missing.items()))
            )

    def route(self, task: Task) -> tuple[str, ...]:
        return self.tasks[task].route

    def serves(self, provider_id: str, locale: str) -> bool:
        return serves_locale(self.providers[provider_id].served_locales(), locale)

    def unserved_tasks(self, tasks: list[Task], tier: str | None, locale: str) -> dict[Task, tuple[str, ...]]:
        """{task: its route} for each of `tasks` whose route for this tier and locale has no
        provider that serves the locale (what a brief's variant cannot be made with)."""
        unserved = {}
        for task in tasks:
            route = self.tasks[task].choose(tier, locale)
            if not any(self.serves(provider_id, locale) for provider_id in route):
                unserved[task] = route
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

        def describe(route: tuple[str, ...]) -> list[dict]:
            described = []
            for provider_id in route:
                provider = self.providers[provider_id]
                entry = {
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

        parts = {
            "route": describe(task_route.route),
            "rules": [{"tier": r.tier, "locale": r.locale, "route": describe(r.route)} for r in task_route.rules],
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
