"""Each router policy alone: retries, Retry-After, fallback, cooldown, concurrency, budget, cache, rules."""

import asyncio
import time
from collections import defaultdict

import pytest

from model_adapters import registry
from model_adapters.concurrency import provider_turn
from model_adapters.types import (
    AdapterInfo,
    FatalProviderError,
    ImageRequest,
    ImageResult,
    MalformedResponse,
    Price,
    ProviderTimeout,
    RateLimited,
    RetryableError,
)
from resources.artifact_store import ArtifactStore
from resources.model_router import ModelRouter, NoProviderSucceeded, VariantContext
from resources.policies.budget import BudgetExceeded
from resources.policies.cooldown import PROCESS_COOLDOWNS
from resources.routing_config import parse_routing_config

# Scripted outcomes per provider id: a list of exceptions to raise before answering.
SCRIPTS: dict[str, list[Exception]] = defaultdict(list)
CALLS: dict[str, int] = defaultdict(int)
IN_FLIGHT = {"now": 0, "max": 0}


class FakeImages:
    def __init__(self, adapter_id: str, max_concurrency: int = 1):
        caps = frozenset({"locale:en"}) if adapter_id.endswith("-en") else frozenset()
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="image",
            provider="fake",
            model="fake-img",
            model_version="1",
            price=Price(per_image=1.0),
            capabilities=caps,
            max_concurrency=max_concurrency,
        )

    async def generate(self, request: ImageRequest) -> ImageResult:
        CALLS[self.info.adapter_id] += 1
        IN_FLIGHT["now"] += 1
        IN_FLIGHT["max"] = max(IN_FLIGHT["max"], IN_FLIGHT["now"])
        try:
            await asyncio.sleep(0.01)
            script = SCRIPTS[self.info.adapter_id]
            if script:
                raise script.pop(0)
            return ImageResult(png=f"png-{self.info.adapter_id}-{request.prompt}".encode(), width=request.width, height=request.height)
        finally:
            IN_FLIGHT["now"] -= 1

    async def aclose(self):
        pass


CONFIG = """
defaults:
  retry: {max_attempts: 3, base_delay_s: 0.5, max_delay_s: 4, retry_after_cap_s: 10}
  cooldown: {default_s: 30, failures_to_trip: 3}
providers:
  primary: {adapter: fake-image, max_concurrency: 2, price: {per_image: 1.0}}
  backup: {adapter: fake-image, max_concurrency: 2}
  premium: {adapter: fake-image}
  voice-en: {adapter: fake-image}
  concept: {adapter: local-concept}
  refine: {adapter: local-torch-refiner}
  voice: {adapter: local-espeak}
  video: {adapter: local-pyav}
tasks:
  image:
    route: [primary, backup]
    rules:
      - {tier: premium, route: [premium, primary]}
      - {locale: de-DE, route: [voice-en, backup]}
  concept: {route: [concept]}
  refine: {route: [refine]}
  voice: {route: [voice]}
  video: {route: [video]}
"""


@pytest.fixture(autouse=True)
def fake_kind(monkeypatch):
    monkeypatch.setitem(registry.ADAPTER_KINDS, "fake-image", registry.AdapterKind("fake-image", "image", f"{__name__}:FakeImages", "1"))
    SCRIPTS.clear()
    CALLS.clear()
    IN_FLIGHT.update(now=0, max=0)
    PROCESS_COOLDOWNS.reset()
    yield
    PROCESS_COOLDOWNS.reset()


@pytest.fixture
def router(studio_home) -> ModelRouter:
    return ModelRouter.from_config(parse_routing_config(CONFIG), "test")


def request(prompt="p") -> ImageRequest:
    return ImageRequest(prompt=prompt, width=8, height=8, palette=("#000000",), seed=1)


def run(router, *calls, waits=None, store=True, variant=None):
    """Run calls on one session with a recording sleep (no real waiting)."""

    async def fake_sleep(seconds):
        if waits is not None:
            waits.append(seconds)

    async def main():
        async with router.session(store=ArtifactStore() if store else None, sleep=fake_sleep) as session:
            return await asyncio.gather(*(session.call("image", r, variant=variant) for r in calls), return_exceptions=True)

    return asyncio.run(main())


def test_retryable_errors_are_retried_with_backoff(router):
    SCRIPTS["primary"] = [RetryableError("503", provider="primary", status=503), RetryableError("502", provider="primary", status=502)]
    waits = []
    (routed,) = run(router, request(), waits=waits)
    assert routed.provenance.adapter_id == "primary" and routed.provenance.attempts == 3
    assert len(waits) == 2 and 0 <= waits[0] <= 0.5 and 0 <= waits[1] <= 1.0
    assert routed.provenance.errors[0].startswith("primary: RetryableError 503")


def test_retry_after_is_honoured(router):
    SCRIPTS["primary"] = [RateLimited("slow down", provider="primary", status=429, retry_after_s=2.5)]
    waits = []
    (routed,) = run(router, request(), waits=waits)
    assert waits == [2.5] and routed.provenance.adapter_id == "primary" and routed.provenance.waited_s == 2.5


def test_non_retryable_error_falls_back_at_once(router):
    SCRIPTS["primary"] = [FatalProviderError("bad request", provider="primary", status=400)]
    (routed,) = run(router, request())
    assert CALLS["primary"] == 1 and routed.provenance.adapter_id == "backup"
    assert routed.provenance.fallbacks == ("primary",)


def test_provider_down_falls_back_and_cools_down(router):
    SCRIPTS["primary"] = [RetryableError("down", provider="primary", status=503) for _ in range(10)]
    (first,) = run(router, request("a"))
    assert first.provenance.adapter_id == "backup" and CALLS["primary"] == 3
    # Three failures in a row trip the cooldown: the next call skips primary without calling it.
    (second,) = run(router, request("b"))
    assert CALLS["primary"] == 3 and second.provenance.adapter_id == "backup"
    assert "primary: cooling down" in second.provenance.errors[0]


def test_everything_failing_names_every_provider(router):
    SCRIPTS["primary"] = [FatalProviderError("nope", provider="primary", status=400)]
    SCRIPTS["backup"] = [FatalProviderError("nope too", provider="backup", status=404)]
    (error,) = run(router, request())
    assert isinstance(error, NoProviderSucceeded)
    assert "primary: FatalProviderError 400: nope" in str(error) and "backup: FatalProviderError 404" in str(error)


def test_concurrency_limit_holds_across_variants(router):
    results = run(router, *(request(str(i)) for i in range(12)))
    assert all(r.provenance.adapter_id == "primary" for r in results)
    assert IN_FLIGHT["max"] == 2


def test_budget_stops_before_overspending(router):
    variant = VariantContext(campaign_id="camp", budget_usd=3.0)
    results = run(router, *(request(str(i)) for i in range(6)), variant=variant)
    spent = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(spent) == 3 and len(refused) == 3
    assert "campaign 'camp' budget exceeded" in str(refused[0]) and "limit $3.00" in str(refused[0])
    assert router.ledger().totals("camp") == {"campaign_id": "camp", "spent_usd": 3.0, "calls": 3}
    assert sum(r.provenance.cost_usd for r in spent) == 3.0


def test_cache_hits_make_no_calls_across_sessions(router):
    (first,) = run(router, request("same"))
    assert CALLS["primary"] == 1 and not first.provenance.cache_hit
    (second,) = run(router, request("same"))
    assert CALLS["primary"] == 1
    assert second.provenance.cache_hit and second.provenance.cost_usd == 0 and second.provenance.attempts == 0
    assert second.value == first.value
    (other,) = run(router, request("different"))
    assert CALLS["primary"] == 2 and not other.provenance.cache_hit


def test_cache_hit_is_free_for_the_budget(router):
    variant = VariantContext(campaign_id="camp", budget_usd=1.0)
    run(router, request("x"), variant=variant)
    (again,) = run(router, request("x"), variant=variant)
    assert again.provenance.cache_hit and router.ledger().totals("camp")["spent_usd"] == 1.0


def test_rules_pick_routes_by_tier_and_locale_capability(router):
    (premium,) = run(router, request("t"), variant=VariantContext(campaign_id="c", tier="premium"))
    assert premium.provenance.adapter_id == "premium"
    # voice-en only declares English: a German variant skips it.
    (german,) = run(router, request("l"), variant=VariantContext(campaign_id="c", locale="de-DE"))
    assert german.provenance.adapter_id == "backup" and CALLS["voice-en"] == 0


@pytest.mark.parametrize(
    ("error", "charged"),
    [
        (MalformedResponse("200 with a body that does not parse", provider="fake"), 1.0),  # answered: billed at the estimate
        (MalformedResponse("200, the provider said what it bills", provider="fake", billed_usd=0.25), 0.25),
        (RetryableError("503", provider="fake", status=503), 0.0),  # refused: not billed
        (RateLimited("429", provider="fake", status=429, retry_after_s=0.0), 0.0),
        (ProviderTimeout("our timeout, nothing came back", provider="fake"), 0.0),
        (RetryableError("connection refused", provider="fake"), 0.0),
    ],
)
def test_the_ledger_charges_what_providers_bill_for_failed_calls(router, error, charged):
    SCRIPTS["primary"] = [error]
    variant = VariantContext(campaign_id="camp", budget_usd=100.0)
    (result,) = run(router, request("billed"), variant=variant)
    assert result.provenance.adapter_id == "primary" and result.provenance.attempts == 2
    totals = router.ledger().totals("camp")
    assert totals["spent_usd"] == pytest.approx(1.0 + charged)  # the answered retry costs its price, 1.0
    assert totals["calls"] == (2 if charged or error.billed_usd is not None else 1)


def test_variants_queued_behind_a_first_call_that_was_rate_limited_wait_instead_of_failing(router, monkeypatch):
    # One provider only: its first call (the probe) meets a 429; the calls queued behind it
    # find it cooling down and, as it is the route's last option, wait it out.
    config = CONFIG.replace("route: [primary, backup]", "route: [primary]")
    only = ModelRouter.from_config(parse_routing_config(config), "test")
    SCRIPTS["primary"] = [RateLimited("429", provider="primary", status=429, retry_after_s=2.0)]
    waits = []
    results = run(only, *(request(f"queued {i}") for i in range(4)), waits=waits)
    assert all(not isinstance(r, Exception) and r.provenance.adapter_id == "primary" for r in results), results
    assert CALLS["primary"] == 5 and 2.0 in waits


def call_with(router, req, rejected=(), reject_answer=None, variant=None):
    """One call on its own session, told which answers were rejected; `reject_answer` marks the
    answer rejected in the cache before the session closes, as the stage hooks do."""

    async def main():
        async with router.session(store=ArtifactStore()) as session:
            routed = await session.call("image", req, seed=req.seed, variant=variant, rejected=rejected)
            if reject_answer:
                session.reject(routed.provenance, reject_answer)
            untried = session.has_untried("image", variant, [*rejected, routed.provenance.adapter_id])
            return routed, untried

    return asyncio.run(main())


def test_a_rejected_provider_is_asked_again_with_a_new_seed_then_the_next_one(router):
    first, untried = call_with(router, request("r"), reject_answer="on_brief: cosine 0.09 < 0.30")
    assert first.provenance.adapter_id == "primary" and first.provenance.seed == 1 and untried
    # One rejection: the same provider, a new seed derived from the variant's (the same on every run).
    retry, untried = call_with(router, request("r"), rejected=("primary",), reject_answer="on_brief: again")
    assert retry.provenance.adapter_id == "primary" and retry.provenance.seed not in (None, 1) and untried
    assert CALLS["primary"] == 2
    again, _ = call_with(router, request("r"), rejected=("primary",))
    assert again.provenance.seed == retry.provenance.seed  # derived, not random
    # quality_retries (default 1) spent: the next provider in the route, at the variant's own seed.
    fallback, untried = call_with(router, request("r"), rejected=("primary", "primary"))
    assert fallback.provenance.adapter_id == "backup" and fallback.provenance.seed == 1
    assert fallback.provenance.fallbacks == ("primary",) and "primary: 2 answers rejected by checks" in fallback.provenance.errors
    assert untried  # counting this answer, the backup has one rejection: a retry is left
    _, untried = call_with(router, request("r"), rejected=("primary", "primary", "backup"), reject_answer="x")
    assert not untried
    with pytest.raises(NoProviderSucceeded, match="primary: 2 answers rejected by checks; backup: 2 answers rejected by checks"):
        call_with(router, request("r"), rejected=("primary", "primary", "backup", "backup"))


def test_a_rejected_answer_is_never_served_from_the_cache(router):
    first, _ = call_with(router, request("c"), reject_answer="png_valid: does not decode")
    assert not first.provenance.cache_hit and first.provenance.cache_key
    # The next run asks again: the primary, called again (not the cache, not the backup).
    second, _ = call_with(router, request("c"))
    assert CALLS["primary"] == 2 and not second.provenance.cache_hit and second.provenance.adapter_id == "primary"
    third, _ = call_with(router, request("c"))  # the new answer was stored over the rejected one
    assert CALLS["primary"] == 2 and third.provenance.cache_hit


def test_a_fallbacks_cached_answer_serves_a_rerun_unless_the_primarys_was_rejected(router):
    SCRIPTS["primary"] = [FatalProviderError("400 bad", provider="fake", status=400)]
    (first,) = run(router, request("f"))
    assert first.provenance.adapter_id == "backup"
    (second,) = run(router, request("f"))  # an unchanged request costs no call, whoever answered it
    assert CALLS["primary"] == 1 and second.provenance.adapter_id == "backup" and second.provenance.cache_hit
    # The primary answered, its answer was rejected, the backup answered the retry: the next
    # run asks the primary again before it takes the backup's cached answer.
    call_with(router, request("g"), reject_answer="on_brief: off")
    call_with(router, request("g"), rejected=("primary",), reject_answer="on_brief: off again")
    fallback, _ = call_with(router, request("g"), rejected=("primary", "primary"))
    assert fallback.provenance.adapter_id == "backup" and CALLS["primary"] == 3
    rerun, _ = call_with(router, request("g"))
    assert CALLS["primary"] == 4 and rerun.provenance.adapter_id == "primary" and not rerun.provenance.cache_hit


def test_quality_retries_is_configured_per_task(studio_home):
    config = CONFIG.replace("  image:\n    route: [primary, backup]\n", "  image:\n    route: [primary, backup]\n    quality_retries: 0\n")
    router = ModelRouter.from_config(parse_routing_config(config), "test")
    fallback, _ = call_with(router, request("q"), rejected=("primary",))
    assert fallback.provenance.adapter_id == "backup"


@pytest.mark.parametrize("marks_turn", [True, False])
def test_a_provider_is_held_for_the_adapters_turn_only(router, monkeypatch, marks_turn):
    """An adapter that marks its turn with the provider (every HTTP adapter: its requests, polls
    and downloads) holds the provider's slot only there; preparing the request and decoding the
    answer run beside other calls' turns. One that does not is held for its whole call."""
    inside = {"now": 0, "max": 0}

    async def generate(self, req):
        await asyncio.sleep(0.15)  # preparing the request
        async with provider_turn():
            async with provider_turn():  # a turn inside a turn holds nothing more
                inside["now"] += 1
                inside["max"] = max(inside["max"], inside["now"])
                await asyncio.sleep(0.1)
                inside["now"] -= 1
        await asyncio.sleep(0.15)  # decoding and checking the answer
        return ImageResult(png=req.prompt.encode(), width=req.width, height=req.height)

    monkeypatch.setattr(FakeImages, "generate", generate)
    monkeypatch.setattr(FakeImages, "marks_provider_turn", marks_turn, raising=False)
    started = time.perf_counter()
    results = run(router, *(request(f"turn {i}") for i in range(6)))
    elapsed = time.perf_counter() - started
    assert all(r.provenance.adapter_id == "primary" for r in results), results
    assert inside["max"] <= 2  # the provider's max_concurrency, either way
    latencies = sorted(r.provenance.latency_s for r in results)
    if marks_turn:
        # Six 0.1 s turns two at a time (0.3 s) between one preparing and one decoding: ~0.6 s.
        assert elapsed < 1.0 and inside["max"] == 2, (elapsed, inside)
        assert 0.09 <= latencies[0] and latencies[-1] < 0.3, latencies  # the provider's time, not the call's
    else:
        # Six 0.4 s calls two at a time.
        assert elapsed >= 1.2, elapsed
        assert 0.39 <= latencies[0], latencies


def test_two_workers_sharing_the_limits_keep_a_providers_concurrency(router):
    """Two sessions (two run workers' routers) on the same shared limits: the provider's
    max_concurrency (2) holds across both, not per worker."""

    async def worker(prompts):
        async with router.session(store=ArtifactStore()) as session:
            return await asyncio.gather(*(session.call("image", request(p)) for p in prompts))

    async def main():
        return await asyncio.gather(worker([f"a{i}" for i in range(5)]), worker([f"b{i}" for i in range(5)]))

    results = asyncio.run(main())
    assert all(r.provenance.adapter_id == "primary" for batch in results for r in batch)
    assert CALLS["primary"] == 10 and IN_FLIGHT["max"] == 2
    assert router.limits().slots_held("primary") == 0  # every slot given back


def test_requests_per_minute_holds_across_workers(studio_home, monkeypatch):
    from resources.policies import shared_limits

    monkeypatch.setattr(shared_limits, "RATE_WINDOW_S", 1.0)  # a one-second "minute", to keep the test short
    monkeypatch.setattr(shared_limits, "RATE_SEND_ALLOWANCE_S", 0.1)  # in step with it
    config = CONFIG.replace(
        "primary: {adapter: fake-image, max_concurrency: 2,", "primary: {adapter: fake-image, max_concurrency: 2, requests_per_minute: 3,"
    )
    router = ModelRouter.from_config(parse_routing_config(config), "test")
    started: list[float] = []
    original = FakeImages.generate

    async def timed(self, req):
        started.append(time.monotonic())
        return await original(self, req)

    monkeypatch.setattr(FakeImages, "generate", timed)

    async def worker(prompts):
        async with router.session(store=ArtifactStore()) as session:
            return await asyncio.gather(*(session.call("image", request(p)) for p in prompts))

    async def main():
        return await asyncio.gather(worker(["a0", "a1", "a2", "a3"]), worker(["b0", "b1", "b2"]))

    results = asyncio.run(main())
    started.sort()
    # 7 calls, 3 a window: never 4 starts within one window.
    assert len(started) == 7 and all(started[i + 3] - started[i] >= 0.95 for i in range(len(started) - 3)), started
    waits = sorted(r.provenance.waited_s for batch in results for r in batch)
    assert sum(w > 0.5 for w in waits) >= 3, (waits, started)  # the calls past the first window waited for it


def test_a_cooldown_set_by_one_worker_is_honoured_by_another(router):
    from resources.policies.cooldown import CooldownTracker

    SCRIPTS["primary"] = [RateLimited("429", provider="fake", status=429, retry_after_s=30.0)]
    (first,) = run(router, request("x"))  # this worker meets the 429 and falls back
    assert first.provenance.adapter_id == "backup"
    # Another worker: its own process-wide tracker, nothing learnt locally, the same shared limits.
    other = CooldownTracker()
    other.configure(default_s=30, auth_s=300, failures_to_trip=3, shared=router.limits())
    assert other.remaining_s("primary") > 25 and other.reason("primary") == "rate limited (429)"
