"""Model providers and the router as Dagster resources.

Each provider in the routing config is a `ProviderResource` (shown on the
UI's resources page with its non-secret settings) that builds its adapter.
`ModelRouter` composes them: for a task it walks the configured route, calls
the first provider that answers, and returns the result with its provenance.

Adapters hold asyncio primitives and clients bound to one event loop, so a
step opens a `RouterSession` inside its loop and closes it at the end.
Policies (retries, cooldowns, budgets, caching) plug into `RouterSession.call`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dagster as dg
from pydantic import Field

from model_adapters.registry import TASK_METHODS, adapter_kind
from model_adapters.types import AdapterError, Price, Task, request_hash
from resources.manifests import Provenance
from resources.routing_config import RoutingConfig

T = TypeVar("T")


class ProviderResource(dg.ConfigurableResource):
    """One configured model provider. `api_key_env` names a variable; the key itself never enters config."""

    provider_id: str
    adapter: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    max_concurrency: int = 1
    price: dict[str, float] = Field(default_factory=dict)
    allowed_hosts: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_config(cls, provider_id: str, routing: RoutingConfig) -> "ProviderResource":
        provider = routing.providers[provider_id]
        return cls(
            provider_id=provider_id,
            adapter=provider.adapter,
            model=provider.model,
            base_url=provider.base_url,
            api_key_env=provider.api_key_env,
            timeout_s=provider.timeout_s,
            max_concurrency=provider.max_concurrency,
            price={k: v for k, v in provider.price.model_dump().items() if v},
            allowed_hosts=list(provider.allowed_hosts),
            # Dagster config wants one value type; adapters parse what they need.
            options={k: str(v) for k, v in provider.options.items()},
        )

    @property
    def task(self) -> Task:
        return adapter_kind(self.adapter).task

    def build_adapter(self) -> Any:
        kind = adapter_kind(self.adapter)
        kwargs: dict[str, Any] = {"adapter_id": self.provider_id, "max_concurrency": self.max_concurrency}
        if not kind.local:
            kwargs.update(
                model=self.model,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                timeout_s=self.timeout_s,
                allowed_hosts=tuple(self.allowed_hosts),
                options=dict(self.options),
            )
        return kind.build(**kwargs)


def estimate_cost(price: Price, task: Task, request: Any, result: Any) -> float:
    """Cost of a finished call from the provider's price table."""
    if task == "concept":
        return price.per_input_token * getattr(result, "input_tokens", 0) + price.per_output_token * getattr(
            result, "output_tokens", 0
        )
    if task in ("image", "refine"):
        return price.per_image
    if task == "voice":
        return price.per_1k_characters * len(request.text) / 1000.0
    if task == "video":
        return price.per_output_second * getattr(result, "duration_s", 0.0)
    return 0.0


@dataclass(frozen=True)
class Routed(Generic[T]):
    value: T
    provenance: Provenance


class NoProviderSucceeded(RuntimeError):
    pass


class RouterSession:
    """The router inside one event loop: adapters, per-provider limits, the route walk."""

    def __init__(self, routes: dict[str, list[str]], providers: dict[str, ProviderResource]):
        self._routes = routes
        self._providers = providers
        self._adapters: dict[str, Any] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}

    def _adapter(self, provider_id: str) -> Any:
        if provider_id not in self._adapters:
            provider = self._providers[provider_id]
            self._adapters[provider_id] = provider.build_adapter()
            self._limits[provider_id] = asyncio.Semaphore(provider.max_concurrency)
        return self._adapters[provider_id]

    def adapter_for(self, task: Task) -> Any:
        """The primary adapter of a task's route (for its declared info)."""
        return self._adapter(self._routes[task][0])

    async def call(self, task: Task, request: Any, *blobs: bytes, seed: int | None = None) -> Routed[Any]:
        errors: list[str] = []
        for provider_id in self._routes[task]:
            adapter = self._adapter(provider_id)
            method = getattr(adapter, TASK_METHODS[task])
            started = time.perf_counter()
            try:
                async with self._limits[provider_id]:
                    value = await method(request, *blobs)
            except AdapterError as exc:
                errors.append(f"{provider_id}: {exc}")
                continue
            latency = time.perf_counter() - started
            info = adapter.info
            provenance = Provenance(
                task=task,
                provider=info.provider,
                adapter_id=info.adapter_id,
                model=info.model,
                model_version=info.model_version,
                seed=seed,
                request_hash=request_hash(request),
                latency_s=round(latency, 4),
                cost_usd=estimate_cost(info.price, task, request, value),
                attempts=len(errors) + 1,
            )
            return Routed(value=value, provenance=provenance)
        raise NoProviderSucceeded(f"every provider for {task!r} failed: " + "; ".join(errors))

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()


class ModelRouter(dg.ConfigurableResource):
    """Routes each task to its providers, in the order the routing config gives."""

    routing_config_path: str
    routes: dict[str, list[str]]
    providers: dict[str, ProviderResource]

    @classmethod
    def from_config(cls, routing: RoutingConfig, path: str) -> "ModelRouter":
        providers = {pid: ProviderResource.from_config(pid, routing) for pid in routing.providers}
        routes = {task: list(route.route) for task, route in routing.tasks.items()}
        return cls(routing_config_path=path, routes=routes, providers=providers)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[RouterSession]:
        session = RouterSession(self.routes, self.providers)
        try:
            yield session
        finally:
            await session.aclose()
