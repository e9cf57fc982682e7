"""Model providers and the router as Dagster resources.

Each provider in the routing config is a `ProviderResource` (shown on the
UI's resources page with its non-secret settings) that builds its adapter.
`ModelRouter` composes them: for a task it walks the configured route, calls
the first provider that answers, and returns the result with its provenance.

Adapters hold asyncio primitives and clients bound to one event loop, so a
step opens a `RouterSession` inside its loop and closes it at the end.
Policies (retries, cooldowns, budgets, caching) live in resources/policies/.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import dagster as dg
from pydantic import Field

from model_adapters.concurrency import provider_held_by
from model_adapters.locales import capability_locales, serves_locale
from model_adapters.registry import DEFAULT_WORDS_PER_SECOND, adapter_kind
from model_adapters.tasks import Blob, task_spec
from model_adapters.types import AdapterError, MalformedResponse, Price, Task, request_hash
from resources.manifests import ArtifactRef, Provenance
from resources.policies.budget import CampaignBudget
from resources.policies.cache import JsonObject, ResponseCache, cache_key, decode_result, encode_result
from resources.policies.cooldown import PROCESS_COOLDOWNS, CooldownTracker
from resources.policies.retry import RetryPolicy
from resources.policies.shared_limits import DEFAULT_LEASE_S, SharedLimits, shared_limits_for
from resources.routing_config import Arm, Experiment, RouteChoice, RoutingConfig, TaskRoute, choose_route

T = TypeVar("T")


# Bare on purpose (hence the ignore): ConfigurableResource[X] would make pydantic build a new base class at run time.
class ProviderResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """One configured model provider. `api_key_env` names a variable; the key itself never enters config."""

    provider_id: str
    adapter: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    max_concurrency: int = 1
    requests_per_minute: int | None = None
    price: dict[str, float] = Field(default_factory=dict)
    allowed_hosts: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    # What it serves (the config's `locales:` or its adapter kind's); None: what the adapter's
    # capabilities say, else any locale.
    locales: list[str] | None = None
    # A voice provider's speaking rate (words per second): sizes the scripts it will read.
    words_per_second: float = DEFAULT_WORDS_PER_SECOND

    @classmethod
    def from_config(cls, provider_id: str, routing: RoutingConfig) -> ProviderResource:
        provider = routing.providers[provider_id]
        served = provider.served_locales()
        return cls(
            provider_id=provider_id,
            adapter=provider.adapter,
            model=provider.model,
            base_url=provider.base_url,
            api_key_env=provider.api_key_env,
            timeout_s=provider.timeout_s,
            max_concurrency=provider.max_concurrency,
            requests_per_minute=provider.requests_per_minute,
            price={k: v for k, v in provider.price.model_dump().items() if v},
            allowed_hosts=list(provider.allowed_hosts),
            # Dagster config wants one value type; adapters parse what they need.
            options={k: str(v) for k, v in provider.options.items()},
            locales=None if served is None else sorted(served),
            words_per_second=provider.speaking_rate(),
        )

    @property
    def task(self) -> Task:
        return adapter_kind(self.adapter).task

    def build_adapter(self) -> Any:
        kind = adapter_kind(self.adapter)
        kwargs: dict[str, Any] = {"adapter_id": self.provider_id, "max_concurrency": self.max_concurrency}
        if kind.local:
            # A local adapter's settings (a model folder, steps) are its keyword arguments; strings
            # here (Dagster config has one value type), parsed by the adapter.
            kwargs.update(self.options)
        else:
            kwargs.update(
                model=self.model,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                timeout_s=self.timeout_s,
                allowed_hosts=tuple(self.allowed_hosts),
                options=dict(self.options),
                price=Price(**self.price),
            )
        return kind.build(**kwargs)


def estimate_cost(price: Price, task: Task, request: Any, result: Any = None) -> float:
    """A call's cost from the provider's price table, as the task's spec prices it: before
    the call (`result` None) an estimate from the request, after it the actual from the result."""
    return task_spec(task).estimate_cost(price, request, result)


# How long calls to a provider that has not answered yet wait behind its first call: a
# misconfigured endpoint refuses at once (404, 400), a call still running after this is
# being worked on. One window per provider per process at most, on the first calls only.
PROBE_WINDOW_S = 0.15
PROBE_POLL_S = 0.02
_LIMITS_EXECUTOR: ThreadPoolExecutor | None = None
_LIMITS_EXECUTOR_LOCK = threading.Lock()


def _limits_executor() -> ThreadPoolExecutor:
    """The process's threads for shared-limits transactions (made on first use)."""
    global _LIMITS_EXECUTOR
    with _LIMITS_EXECUTOR_LOCK:
        if _LIMITS_EXECUTOR is None:
            _LIMITS_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shared-limits")
        return _LIMITS_EXECUTOR


# A worker waiting for a shared slot asks again after this, doubling up to the max.
SLOT_POLL_S = 0.02
SLOT_POLL_MAX_S = 0.5


def failed_call_cost(error: AdapterError, estimate_usd: float) -> float | None:
    """What a call that raised `error` is charged (None: nothing, the call is not counted).

    The provider's own figure when its answer carried one; else a call whose answer
    arrived (HTTP 2xx) but could not be used, a malformed body or broken media, is
    charged at its estimate: the provider did the work and bills it. A refusal (an
    error status: 4xx, 5xx, 429), a connection that failed and our own timeout cost
    nothing. docs/routing.md has the rule."""
    if error.billed_usd is not None:
        return error.billed_usd
    if isinstance(error, MalformedResponse) and error.status in (None, *range(200, 300)):
        return estimate_usd
    return None


def retry_seed(seed: int, retry: int) -> int:
    """The seed of a provider's `retry`-th try after rejected answers: derived from the
    variant's seed, so a re-run asks exactly what the run before it asked."""
    digest = hashlib.sha256(f"{seed}:{retry}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _reseeded(request: Any, seed: int | None, retry: int) -> tuple[Any, int | None]:
    """(the request as asked on this try, its seed). A request without a seed field is asked
    as it is: its rejected answer is not served from the cache, so the provider answers anew."""
    if retry == 0:
        return request, seed
    base = getattr(request, "seed", None)
    base = seed if base is None else base
    if base is None:
        return request, seed
    new_seed = retry_seed(base, retry)
    if "seed" in type(request).model_fields:
        return request.model_copy(update={"seed": new_seed}), new_seed
    return request, seed


@dataclass(frozen=True)
class Routed(Generic[T]):
    value: T
    provenance: Provenance


@dataclass(frozen=True)
class VariantContext:
    """What route rules and budgets look at."""

    campaign_id: str
    budget_usd: float | None = None
    tier: str | None = None
    locale: str | None = None
    # Draws the variant's arm in a route experiment (None: no arm is drawn; the control's route).
    partition_key: str | None = None


class NoProviderSucceeded(RuntimeError):
    pass


@dataclass
class _Attempts:
    count: int = 0
    waited_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class _Turn:
    """How long one call held its provider: the provider's service time, the latency a
    call's provenance reports (not the waits for a slot, nor the adapter's local work)."""

    held_s: float = 0.0


class RouterSession:
    """The router inside one event loop: adapters, per-provider limits and the policies.

    For each call, the route (chosen by the variant's tier/locale rules),
    less the providers lacking the locale or whose answers were rejected more
    than `quality_retries` times: first the cached answers in route order (up
    to a provider whose cached answer was rejected: it is asked again first);
    then in order, for each provider not cooling down, a budget reservation,
    the call under its concurrency limit, and retries with backoff while the
    error is retryable; then the next provider.
    """

    def __init__(
        self,
        task_routes: dict[str, TaskRoute],
        providers: dict[str, ProviderResource],
        *,
        retry: RetryPolicy,
        cooldowns: CooldownTracker,
        ledger: SharedLimits | None,
        cache: ResponseCache | None,
        store: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        quality_retries: int = 1,
        limits: SharedLimits | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        experiments: dict[str, Experiment] | None = None,
    ):
        self._task_routes = task_routes
        self._experiments = experiments or {}
        self._default_quality_retries = quality_retries
        self._providers = providers
        self._retry = retry
        self._cooldowns = cooldowns
        self._ledger = ledger
        self._cache = cache
        self._store = store
        self._sleep = sleep
        self._adapters: dict[str, Any] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._probes: dict[str, asyncio.Lock] = {}
        self._probe_started: dict[str, float] = {}
        self._probe_passed: set[str] = set()  # a first call outlasted the window: working, not refusing
        # Slots and request rates every worker shares (None: this process's semaphores only).
        self._shared = limits
        self._lease_s = lease_s
        self._holder = f"{socket.gethostname()}:{os.getpid()}"
        self._held_slots: set[str] = set()
        self._slot_freed: dict[str, asyncio.Condition] = {}  # per provider: a slot this process released
        self._heartbeat: asyncio.Task[None] | None = None

    def _adapter(self, provider_id: str) -> Any:
        if provider_id not in self._adapters:
            provider = self._providers[provider_id]
            self._adapters[provider_id] = provider.build_adapter()
            self._limits[provider_id] = asyncio.Semaphore(provider.max_concurrency)
        return self._adapters[provider_id]

    def route_choice(self, task: Task, variant: VariantContext | None, arm: Arm | None = None) -> RouteChoice:
        """The route for the variant's call, and the experiment arm that chose it (routing_config.choose_route)."""
        return choose_route(
            self._task_routes[task],
            self._experiments.get(task),
            variant.tier if variant else None,
            variant.locale if variant else None,
            variant.partition_key if variant else None,
            arm,
        )

    def route_for(self, task: Task, variant: VariantContext | None, arm: Arm | None = None) -> tuple[str, ...]:
        return self.route_choice(task, variant, arm).route

    def shadow_experiment(self, task: Task, variant: VariantContext | None) -> Experiment | None:
        """The task's shadow experiment when this variant is in it (no route rule took it): the
        candidate route is then asked too, beside the control (assets/experiments.py)."""
        experiment = self._experiments.get(task)
        if experiment is None or experiment.mode != "shadow":
            return None
        return experiment if self.route_choice(task, variant).experiment else None

    def _cache_identity(self, provider_id: str, adapter: Any) -> dict[str, Any]:
        provider = self._providers[provider_id]
        return {
            "provider": provider_id,
            "adapter": provider.adapter,
            "adapter_version": adapter_kind(provider.adapter).version,
            "model": adapter.info.model,
            "model_version": adapter.info.model_version,
            "options": dict(sorted(provider.options.items())),
        }

    def _cached(self, task: Task, key: str) -> tuple[Any | None, bool]:
        """(the cached answer or None, whether the entry holds an answer marked rejected)."""
        assert self._cache is not None  # a call has cache keys only when there is a cache
        entry = self._cache.read(key)
        if entry is None:
            return None, False
        if entry.get("rejected"):
            return None, True
        try:
            return decode_result(task, entry["result"], lambda ref: self._store.get(ArtifactRef.model_validate(ref))), False
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return None, False  # an entry whose media is gone, or that is damaged or planted, is a miss

    def _remember(self, task: Task, key: str, value: Any, provider_id: str) -> None:
        def put_blob(data: bytes, blob: Blob) -> JsonObject:
            ref: ArtifactRef = self._store.put(data, extension=blob.extension, media_type=blob.media_type)
            return ref.model_dump()

        assert self._cache is not None  # a call has cache keys only when there is a cache
        self._cache.write(key, {"task": task, "provider": provider_id, "result": encode_result(task, value, put_blob)})

    def _lacks_locale(self, provider_id: str, variant: VariantContext | None) -> bool:
        if variant is None or variant.locale is None:
            return False
        declared: Iterable[str] | None = self._providers[provider_id].locales
        if declared is None:
            declared = capability_locales(self._adapter(provider_id).info.capabilities)
        return not serves_locale(declared, variant.locale)

    def charges(self, provider_id: str) -> bool:
        """Whether the provider's calls cost anything (its price table has a non-zero unit)."""
        return any(value for value in self._providers[provider_id].price.values())

    def speaking_rate(self, variant: VariantContext) -> float:
        """Words per second of the voice that will read this variant's script: the first provider
        of its voice route that serves its locale (the one that answers unless it fails)."""
        if "voice" in self._task_routes:
            for provider_id in self.route_for("voice", variant):
                if not self._lacks_locale(provider_id, variant):
                    return self._providers[provider_id].words_per_second
        return DEFAULT_WORDS_PER_SECOND

    def _quality_retries(self, task: Task) -> int:
        task_route = self._task_routes[task]
        return self._default_quality_retries if task_route.quality_retries is None else task_route.quality_retries

    def has_untried(self, task: Task, variant: VariantContext | None, rejected: Sequence[str]) -> bool:
        """Whether the route still has a provider to ask after the answers `rejected` (one
        provider id per rejected answer): the quality-aware fallback's stop condition."""
        given, retries = Counter(rejected), self._quality_retries(task)
        return any(
            given[provider_id] <= retries and not self._lacks_locale(provider_id, variant) for provider_id in self.route_for(task, variant)
        )

    async def call(
        self,
        task: Task,
        request: Any,
        *blobs: bytes,
        seed: int | None = None,
        variant: VariantContext | None = None,
        rejected: Sequence[str] = (),
        arm: Arm | None = None,
    ) -> Routed[Any]:
        """The route's first cached answer, else its first provider that answers. `rejected`
        holds one provider id per answer a blocking check rejected for this request: a
        provider is asked again with a new seed up to the task's `quality_retries` times,
        then skipped. An answer marked rejected in the cache is never served.

        In a route experiment the variant's arm picks the route (`arm` forces one: a shadow's
        candidate call), and the answer's provenance names the experiment and the arm."""
        choice = self.route_choice(task, variant, arm)
        route = choice.route
        in_arm = {"experiment": choice.experiment, "experiment_arm": choice.arm}
        given, retries = Counter(rejected), self._quality_retries(task)
        attempts = _Attempts()
        candidates = []  # (provider id, adapter, the request as asked of it, its seed, its cache key)
        for provider_id in route:
            adapter = self._adapter(provider_id)
            if given[provider_id] > retries:
                attempts.fallbacks.append(provider_id)
                attempts.errors.append(f"{provider_id}: {given[provider_id]} answers rejected by checks")
                continue
            if variant is not None and self._lacks_locale(provider_id, variant):  # (never without a variant)
                attempts.fallbacks.append(provider_id)
                attempts.errors.append(f"{provider_id}: does not support locale {variant.locale}")
                continue
            asked, asked_seed = _reseeded(request, seed, given[provider_id])
            key = cache_key(self._cache_identity(provider_id, adapter), asked, blobs) if self._cache is not None else None
            candidates.append((provider_id, adapter, asked, asked_seed, key))

        def hit(provider_id: str, asked: Any, asked_seed: int | None, key: str, value: Any) -> Routed[Any]:
            provenance = self._provenance(task, provider_id, asked, asked_seed, 0.0, 0.0, attempts, cache_hit=True)
            return Routed(value, provenance.model_copy(update={"cache_key": key, **in_arm}))

        # Cached answers first, in route order, so an unchanged request costs no call even when
        # a fallback answered it; but a provider whose cached answer was rejected is asked again
        # before any later provider's answer is taken.
        looked_up = set()
        for provider_id, _, asked, asked_seed, key in candidates:
            if key is None:
                break
            value, was_rejected = self._cached(task, key)
            if value is not None:
                return hit(provider_id, asked, asked_seed, key, value)
            looked_up.add(provider_id)
            if was_rejected:
                break
        for index, (provider_id, adapter, asked, asked_seed, key) in enumerate(candidates):
            if key is not None and provider_id not in looked_up:
                value, _ = self._cached(task, key)
                if value is not None:
                    return hit(provider_id, asked, asked_seed, key, value)
            last = index == len(candidates) - 1
            if not await self._through_cooldown(provider_id, last, attempts):
                attempts.fallbacks.append(provider_id)
                continue
            routed = await self._probed_call(task, provider_id, adapter, asked, blobs, asked_seed, variant, attempts, last)
            if routed is not None:
                if key is not None:
                    self._remember(task, key, routed.value, provider_id)
                return Routed(routed.value, routed.provenance.model_copy(update={"cache_key": key, **in_arm}))
            attempts.fallbacks.append(provider_id)
        raise NoProviderSucceeded(f"every provider for {task!r} failed ({', '.join(route)}): " + "; ".join(attempts.errors))

    def reject(self, provenance: Provenance, reason: str) -> None:
        """Mark the cached answer behind `provenance` rejected: no later call is served it."""
        if self._cache is not None and provenance.cache_key:
            self._cache.mark_rejected(provenance.cache_key, reason)

    def _cooling_note(self, provider_id: str) -> str:
        # No seconds left in the text: the same refusal reads the same on every run.
        reason = self._cooldowns.reason(provider_id)
        return f"{provider_id}: cooling down" + (f" ({reason})" if reason else "")

    async def _through_cooldown(self, provider_id: str, last: bool, attempts: _Attempts) -> bool:
        """False (noted) when the provider is cooling down and is skipped; the last option of a
        route waits a cooldown out when it is within the Retry-After cap."""
        wait = self._cooldowns.remaining_s(provider_id)
        if wait <= 0:
            return True
        if not last or wait > self._retry.retry_after_cap_s:
            attempts.errors.append(self._cooling_note(provider_id))
            return False
        await self._sleep(wait)
        attempts.waited_s += wait
        return True

    async def _probed_call(
        self,
        task: Task,
        provider_id: str,
        adapter: Any,
        request: Any,
        blobs: tuple[bytes, ...],
        seed: int | None,
        variant: VariantContext | None,
        attempts: _Attempts,
        last: bool,
    ) -> Routed[Any] | None:
        """A provider that has not answered yet in this process gets one call at a time, so a
        misconfigured one (404, the same 400 again) is cooled down after one or two calls
        instead of one per variant in flight. The others wait until a call is answered, or
        until the call in flight has taken PROBE_WINDOW_S: a refusal comes back at once, a
        call that takes longer is being worked on, and the provider's own limit applies."""
        lock = self._probes.setdefault(provider_id, asyncio.Lock())
        loop = asyncio.get_running_loop()
        while not (self._cooldowns.has_answered(provider_id) or provider_id in self._probe_passed):
            if not lock.locked():
                async with lock:  # this call is the probe; its window opens when its request is sent
                    self._probe_started.pop(provider_id, None)
                    # The call before this one may have tripped a cooldown meanwhile.
                    if not await self._through_cooldown(provider_id, last, attempts):
                        return None
                    return await self._call_provider(task, provider_id, adapter, request, blobs, seed, variant, attempts)
            if loop.time() - self._probe_started.get(provider_id, loop.time()) >= PROBE_WINDOW_S:
                self._probe_passed.add(provider_id)
                break
            await asyncio.sleep(PROBE_POLL_S)
        # The probe may have been refused meanwhile (its cooldown is recorded before anything else).
        if not await self._through_cooldown(provider_id, last, attempts):
            return None
        return await self._call_provider(task, provider_id, adapter, request, blobs, seed, variant, attempts)

    async def _call_provider(
        self,
        task: Task,
        provider_id: str,
        adapter: Any,
        request: Any,
        blobs: tuple[bytes, ...],
        seed: int | None,
        variant: VariantContext | None,
        attempts: _Attempts,
    ) -> Routed[Any] | None:
        method = getattr(adapter, task_spec(task).method)
        price = adapter.info.price
        attempt = 0
        while True:
            attempt += 1
            # The reservation's settlement (`actual_usd`, or None to release it), once one is made.
            settle: Callable[[float | None], None] | None = None
            if self._ledger is not None and variant is not None and variant.budget_usd is not None:
                budget = CampaignBudget(variant.campaign_id, variant.budget_usd)
                token = await self._limits_call(self._ledger.reserve, budget, estimate_cost(price, task, request))
                settle = functools.partial(self._ledger.settle, variant.campaign_id, token)
            attempts.count += 1
            turn = _Turn()
            hold = functools.partial(self._provider_turn, provider_id, attempts, turn)
            try:
                if getattr(adapter, "marks_provider_turn", False):
                    # The adapter holds the provider (slot, rate) only while it talks to it:
                    # preparing the request and decoding the answer leave the slot to others.
                    with provider_held_by(hold):
                        value = await method(request, *blobs)
                else:
                    async with hold():
                        value = await method(request, *blobs)
            except AdapterError as exc:
                # The cooldown first: calls queued behind a probe read it as soon as it is known.
                self._cooldowns.record_failure(provider_id, exc)
                if settle:
                    await self._limits_call(settle, failed_call_cost(exc, estimate_cost(price, task, request)))
                status = f" {exc.status}" if exc.status else ""
                attempts.errors.append(f"{provider_id}: {type(exc).__name__}{status}: {exc}")
                if not self._retry.should_retry(exc, attempt):
                    return None
                delay = self._retry.delay_s(exc, attempt)
                await self._sleep(delay)
                attempts.waited_s += delay
                continue
            except BaseException:
                if settle:  # cancelled or broken: released (a lost release lapses with RESERVATION_TTL_S)
                    settle(None)
                raise
            latency = turn.held_s
            cost = estimate_cost(price, task, request, value)
            if settle:
                await self._limits_call(settle, cost)
            self._cooldowns.record_success(provider_id)
            return Routed(value, self._provenance(task, provider_id, request, seed, latency, cost, attempts))

    @asynccontextmanager
    async def _provider_turn(self, provider_id: str, attempts: _Attempts, turn: _Turn) -> AsyncIterator[None]:
        """A call's hold on its provider: a slot, then a request within the rate."""
        async with self._slot(provider_id, attempts):
            await self._within_rate(provider_id, attempts)
            # The probe window counts from here: waits for slots, rates and the ledger are ours.
            self._probe_started.setdefault(provider_id, asyncio.get_running_loop().time())
            started = time.perf_counter()
            try:
                yield
            finally:
                turn.held_s += time.perf_counter() - started

    async def _limits_call(self, fn: Callable[..., T], *args: Any) -> T:
        """A shared-limits transaction off the event loop, on threads of its own: never queued
        behind decoding or checks in the default executor, so a slot or a reservation costs
        its transaction, not the wait for a busy thread."""
        return await asyncio.get_running_loop().run_in_executor(_limits_executor(), functools.partial(fn, *args))

    @asynccontextmanager
    async def _slot(self, provider_id: str, attempts: _Attempts) -> AsyncIterator[None]:
        """One of the provider's `max_concurrency` slots: this process's semaphore, then (with
        shared limits) a leased slot row every worker counts, polled for while all are held.
        A wait for a slot that was taken counts in `waited_s` like any other wait for a limit."""
        semaphore = self._limits[provider_id]
        queued = time.perf_counter() if semaphore.locked() else None
        async with semaphore:
            if self._shared is None:
                if queued is not None:
                    attempts.waited_s += time.perf_counter() - queued
                yield
                return
            capacity, delay = self._providers[provider_id].max_concurrency, SLOT_POLL_S
            freed = self._slot_freed.setdefault(provider_id, asyncio.Condition())
            while True:
                token = await self._limits_call(self._shared.try_acquire_slot, provider_id, capacity, self._holder, self._lease_s)
                if token:
                    break
                queued = time.perf_counter() if queued is None else queued
                # A slot this process frees wakes one of its waiters at once; one freed by another
                # worker is found by polling, jittered so that workers do not poll in step.
                async with freed:
                    try:
                        await asyncio.wait_for(freed.wait(), delay * (0.5 + random.random()))
                        continue
                    except TimeoutError:
                        pass
                delay = min(delay * 2, SLOT_POLL_MAX_S)
            if queued is not None:
                attempts.waited_s += time.perf_counter() - queued
            self._held_slots.add(token)
            if self._heartbeat is None or self._heartbeat.done():
                self._heartbeat = asyncio.get_running_loop().create_task(self._renew_leases(self._shared))
            try:
                yield
            finally:
                self._held_slots.discard(token)
                await self._limits_call(self._shared.release_slot, token)
                async with freed:
                    freed.notify(1)

    async def _renew_leases(self, shared: SharedLimits) -> None:
        """While this session holds slots, their leases are renewed; a process that dies stops."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            if self._held_slots:
                await self._limits_call(shared.renew_slots, list(self._held_slots), self._lease_s)

    async def _within_rate(self, provider_id: str, attempts: _Attempts) -> None:
        """Waits until the provider's `requests_per_minute` allows one more call (every worker's count)."""
        per_minute = self._providers[provider_id].requests_per_minute
        if not per_minute or self._shared is None:
            return
        while True:
            wait = await self._limits_call(self._shared.take_request, provider_id, per_minute)
            if wait <= 0:
                return
            await asyncio.sleep(wait)
            attempts.waited_s += wait

    def _provenance(
        self,
        task: Task,
        provider_id: str,
        request: Any,
        seed: int | None,
        latency: float,
        cost: float,
        attempts: _Attempts,
        cache_hit: bool = False,
    ) -> Provenance:
        info = self._adapter(provider_id).info
        return Provenance(
            task=task,
            provider=info.provider,
            adapter_id=info.adapter_id,
            model=info.model,
            model_version=info.model_version,
            seed=seed,
            request_hash=request_hash(request),
            latency_s=round(latency, 4),
            cost_usd=round(cost, 6),
            attempts=attempts.count,
            cache_hit=cache_hit,
            waited_s=round(attempts.waited_s, 3),
            fallbacks=tuple(attempts.fallbacks),
            errors=tuple(attempts.errors),
        )

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for adapter in self._adapters.values():
            await adapter.aclose()


# Bare on purpose (hence the ignore): ConfigurableResource[X] would make pydantic build a new base class at run time.
class ModelRouter(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Routes each task to its providers, in the order the routing config gives."""

    routing_config_path: str
    routing_json: str  # the validated routing config, so runs use exactly what the definitions loaded
    providers: dict[str, ProviderResource]
    # Where the budget ledger, slots, rates and cooldowns live (resources/policies/shared_limits.py):
    # "" = the Dagster instance's Postgres database when it has one, else SQLite under STUDIO_HOME.
    limits_url: str = ""

    @classmethod
    def from_config(cls, routing: RoutingConfig, path: str) -> ModelRouter:
        providers = {pid: ProviderResource.from_config(pid, routing) for pid in routing.providers}
        return cls(routing_config_path=path, routing_json=routing.model_dump_json(), providers=providers)

    @property
    def routing(self) -> RoutingConfig:
        return RoutingConfig.model_validate_json(self.routing_json)

    @property
    def routes(self) -> dict[str, list[str]]:
        return {task: list(route.route) for task, route in self.routing.tasks.items()}

    def limits(self, instance: Any = None) -> SharedLimits:
        """The shared limits for runs of `instance` (see `limits_url`)."""
        return shared_limits_for(instance, self.limits_url)

    def ledger(self, instance: Any = None) -> SharedLimits:
        """The budget ledger (`reserve`, `settle`, `totals`) every worker of `instance` shares."""
        return self.limits(instance)

    @asynccontextmanager
    async def session(
        self, store: Any = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, instance: Any = None
    ) -> AsyncIterator[RouterSession]:
        """`store` (the artifact store) enables the response cache: cached media lives beside the artifacts.
        `instance` (the run's Dagster instance) picks where the shared limits live."""
        routing = self.routing
        retry = RetryPolicy(**routing.defaults.retry.model_dump())
        limits = await asyncio.to_thread(self.limits, instance)  # creates the tables on first use
        PROCESS_COOLDOWNS.configure(**routing.defaults.cooldown.model_dump(), shared=limits)
        cache = ResponseCache(store) if routing.defaults.cache and store is not None else None
        session = RouterSession(
            routing.tasks,
            self.providers,
            retry=retry,
            cooldowns=PROCESS_COOLDOWNS,
            ledger=limits,
            cache=cache,
            store=store,
            sleep=sleep,
            quality_retries=routing.defaults.quality_retries,
            limits=limits,
            lease_s=routing.defaults.slot_lease_s,
            experiments=routing.experiments,
        )
        try:
            yield session
        finally:
            await session.aclose()
