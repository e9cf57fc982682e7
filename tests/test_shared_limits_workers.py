"""Four worker processes, one provider, the limits shared through Postgres.

Each worker is a separate process with its own router session (as a run worker on another
machine has), calling the provider simulator over HTTP. Without shared limits each would allow
the provider's `max_concurrency` and `requests_per_minute` on its own, and spend the whole
budget on its own.
"""

import json
import multiprocessing
import os
import signal
import time

import pytest

from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from resources.policies.shared_limits import SharedLimits
from tests.test_shared_limits import postgres_url  # noqa: F401  (the fixture: a database of its own)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

KEY = "sk-workers-test"
CAMPAIGN = "four-workers"
CAP, PER_WINDOW, WINDOW_S = 4, 16, 5.0  # a five-second "minute" keeps the test short
PRICE, BUDGET = 0.01, 0.40  # 40 of the 64 images fit


def routing(sim_url: str, lease_s: float = 30.0, backup: bool = False) -> dict:
    providers = {
        "hosted-image": {
            "adapter": "openai-images",
            "base_url": sim_url + "/v1",
            "model": "img-1",
            "api_key_env": "WORKERS_KEY",
            "max_concurrency": CAP,
            "requests_per_minute": PER_WINDOW,
            "price": {"per_image": PRICE},
            "options": {"response_format": "b64_json"},
        },
        "local-image": {"adapter": "local-procedural-image", "max_concurrency": 2},
    }
    return {
        "defaults": {
            "retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1, "retry_after_cap_s": 0.5},
            "slot_lease_s": lease_s,
        },
        "providers": providers,
        "tasks": {"image": {"route": ["hosted-image", "local-image"] if backup else ["hosted-image"]}},
    }


def worker(url: str, config: dict, prompts: list[str], results, home: str, campaign: str = CAMPAIGN) -> None:
    """One run worker: its own process, router session and process-wide cooldowns."""
    os.environ["STUDIO_HOME"] = home
    os.environ["WORKERS_KEY"] = KEY
    import asyncio

    from model_adapters.types import ImageRequest
    from resources.model_router import ModelRouter, VariantContext
    from resources.policies import shared_limits
    from resources.routing_config import parse_routing_config

    shared_limits.RATE_WINDOW_S = WINDOW_S
    loaded = ModelRouter.from_config(parse_routing_config(json.dumps(config)), "workers")
    router = ModelRouter(routing_config_path="workers", routing_json=loaded.routing_json, providers=loaded.providers, limits_url=url)
    variant = VariantContext(campaign_id=campaign, budget_usd=BUDGET)

    async def main():
        async with router.session() as session:
            requests = [ImageRequest(prompt=p, width=64, height=64, palette=("#102030",), seed=1) for p in prompts]
            return await asyncio.gather(*(session.call("image", r, variant=variant) for r in requests), return_exceptions=True)

    outcomes = asyncio.run(main())
    results.put(
        [
            {"ok": False, "error": f"{type(o).__name__}: {o}"}
            if isinstance(o, BaseException)
            else {"ok": True, "adapter": o.provenance.adapter_id, "errors": list(o.provenance.errors)}
            for o in outcomes
        ]
    )


def run_workers(url: str, config: dict, prompt_sets: list[list[str]], home, campaign: str = CAMPAIGN) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=worker, args=(url, config, prompts, results, str(home), campaign)) for prompts in prompt_sets]
    for process in processes:
        process.start()
    outcomes = [item for _ in processes for item in results.get(timeout=240)]
    for process in processes:
        process.join(timeout=60)
    return outcomes


def max_in_window(starts: list[float], window_s: float) -> int:
    starts = sorted(starts)
    most, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_four_workers_share_one_providers_concurrency_rate_and_budget(postgres_url, studio_home):  # noqa: F811
    settings = {"api_key": KEY, "default": {"latency": {"ms": 120}}}
    with ProviderSimulator(SimulatorSettings.from_mapping(settings)) as sim:
        prompts = [[f"worker {w} variant {v}" for v in range(16)] for w in range(4)]
        outcomes = run_workers(postgres_url, routing(sim.base_url), prompts, studio_home)
        stats = sim.stats()
    made = [o for o in outcomes if o["ok"]]
    refused = [o for o in outcomes if not o["ok"]]
    # Concurrency: 4 workers x 4 would be 16 in flight; shared, never above 4.
    assert stats["max_in_flight"]["openai_images"] <= CAP, stats["max_in_flight"]
    # Rate: never more than PER_WINDOW requests arrived in any window, all workers together, as
    # the provider counts them (the limiter's shipped allowance covers the late arrivals of a
    # loaded host: 17 arrived in 4.5 s once without it).
    assert max_in_window(stats["starts"]["openai_images"], WINDOW_S) <= PER_WINDOW, sorted(stats["starts"]["openai_images"])
    # Budget: 40 images fit; the other 24 variants were refused, naming the campaign.
    ledger = SharedLimits(postgres_url)
    totals = ledger.totals(CAMPAIGN)
    assert totals["spent_usd"] <= BUDGET + 1e-9 and len(made) == totals["calls"] == 40, (totals, len(made))
    assert len(refused) == 24 and all(f"campaign '{CAMPAIGN}' budget exceeded" in o["error"] for o in refused), refused[:2]
    assert ledger.slots_held("hosted-image") == 0


def test_a_cooldown_one_worker_meets_is_honoured_by_the_others(postgres_url, studio_home):  # noqa: F811
    storm = {"sequence": ["rate_limit"], "retry_after_s": 30}  # the first request meets a 429, Retry-After 30 s
    settings = {"api_key": KEY, "default": {"latency": {"ms": 20}}, "endpoints": {"openai_images": {"faults": storm}}}
    with ProviderSimulator(SimulatorSettings.from_mapping(settings)) as sim:
        config = routing(sim.base_url, backup=True)
        first = run_workers(postgres_url, config, [["first worker"]], studio_home, campaign="cooling")
        others = run_workers(postgres_url, config, [[f"worker {w}"] for w in range(3)], studio_home, campaign="cooling")
        calls = sum(sim.stats()["statuses"].values())
    assert first[0].get("adapter") == "local-image", first and "RateLimited 429" in first[0]["errors"][0]
    assert calls == 1  # the others never called the provider: it was cooling down for every worker
    assert all(o["adapter"] == "local-image" for o in others)
    assert all(o["errors"] == ["hosted-image: cooling down (rate limited (429))"] for o in others), others


def test_a_killed_worker_frees_its_slots_when_the_lease_lapses(postgres_url, studio_home):  # noqa: F811
    SharedLimits(postgres_url).clear_cooldowns()  # the module's database: the 429 test's cooldown is still on
    settings = {"api_key": KEY, "default": {"latency": {"ms": 20000}}}  # calls that never finish in time
    with ProviderSimulator(SimulatorSettings.from_mapping(settings)) as sim:
        context = multiprocessing.get_context("spawn")
        results = context.Queue()  # held here: a queue collected before the child starts takes the child down
        process = context.Process(
            target=worker,
            args=(postgres_url, routing(sim.base_url, lease_s=2.0), ["a", "b", "c", "d", "e"], results, str(studio_home), "killed"),
        )
        process.start()
        ledger = SharedLimits(postgres_url)
        deadline = time.time() + 60
        while ledger.slots_held("hosted-image") < CAP:
            assert time.time() < deadline and process.is_alive(), f"the worker never took its slots (exit code {process.exitcode})"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
        killed_at = time.time()
        while ledger.slots_held("hosted-image"):
            assert time.time() - killed_at < 2.0 + 1.0, "slots outlived their lease"
            time.sleep(0.1)
