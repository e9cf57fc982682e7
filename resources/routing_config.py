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

from model_adapters.registry import adapter_kind
from model_adapters.types import TASKS, Price, Task

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
    max_concurrency: int = Field(default=1, ge=1, le=256)
    price: Price = Price()
    # Hosts, besides base_url's, that media URLs returned by this provider may point to.
    allowed_hosts: tuple[str, ...] = ()
    # Adapter-specific settings (e.g. a ComfyUI workflow file, an output format).
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        adapter_kind(value)  # raises with the list of known adapters
        return value


class TaskRoute(_Strict):
    route: tuple[ProviderId, ...] = Field(min_length=1)


class RoutingConfig(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    providers: dict[ProviderId, ProviderConfig] = Field(min_length=1)
    tasks: dict[Task, TaskRoute]

    @model_validator(mode="after")
    def _routes_are_consistent(self) -> "RoutingConfig":
        missing = [task for task in TASKS if task not in self.tasks]
        if missing:
            raise ValueError(f"tasks: no route for {', '.join(missing)}")
        for task, task_route in self.tasks.items():
            for index, provider_id in enumerate(task_route.route):
                where = f"tasks.{task}.route[{index}]"
                if provider_id not in self.providers:
                    raise ValueError(f"{where}: unknown provider {provider_id!r}")
                kind = adapter_kind(self.providers[provider_id].adapter)
                if kind.task != task:
                    raise ValueError(
                        f"{where}: provider {provider_id!r} uses adapter {kind.name!r}, "
                        f"which does the {kind.task!r} task, not {task!r}"
                    )
        return self

    def route(self, task: Task) -> tuple[str, ...]:
        return self.tasks[task].route

    def task_identity(self, task: Task) -> str:
        """A short, stable hash of what decides a task's output: the route's
        providers, adapters, adapter versions, models and endpoints (not
        concurrency, timeouts, prices or keys). It is the asset's code version."""
        parts = []
        for provider_id in self.route(task):
            provider = self.providers[provider_id]
            parts.append(
                {
                    "provider": provider_id,
                    "adapter": provider.adapter,
                    "adapter_version": adapter_kind(provider.adapter).version,
                    "model": provider.model,
                    "base_url": provider.base_url,
                    "options": provider.options,
                }
            )
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


class RoutingConfigError(ValueError):
    pass


def _field_path(loc: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(config)"


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
        problems = [f"{_field_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise RoutingConfigError(f"{source}: " + "; ".join(problems)) from None


def load_routing_config(path: str | Path) -> RoutingConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read routing config: {exc.strerror}") from None
    return parse_routing_config(text, str(path))
