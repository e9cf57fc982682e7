"""The shared limits on both backends: SQLite under STUDIO_HOME and Postgres (a database of its own).

Each policy alone (budget, slot leases, rate windows, cooldowns), then across processes: the
semantics a run worker on another machine relies on.
"""

import multiprocessing
import os
import signal
import time
import uuid

import psycopg2
import pytest
import sqlalchemy as sa
from psycopg2 import sql

from resources.policies.budget import BudgetExceeded, CampaignBudget
from resources.policies.shared_limits import RATE_SEND_ALLOWANCE_S, SharedLimits, shared_limits_for
from resources.sql_pool import ping_when_idle


def _server() -> dict:
    return {
        "host": os.environ.get("STUDIO_TEST_PG_HOST", "127.0.0.1"),
        "port": int(os.environ.get("STUDIO_TEST_PG_PORT", "5432")),
        "user": os.environ.get("STUDIO_TEST_PG_USER", "postgres"),
        "password": os.environ.get("STUDIO_TEST_PG_PASSWORD", ""),
    }


@pytest.fixture(scope="module")
def postgres_url():
    """A database of its own on the test server, dropped afterwards (Postgres unreachable fails, as in CI)."""
    if os.environ.get("STUDIO_SKIP_POSTGRES") == "1":
        pytest.skip("STUDIO_SKIP_POSTGRES=1")
    server = _server()
    admin = psycopg2.connect(dbname=os.environ.get("STUDIO_TEST_PG_ADMIN_DB", "postgres"), connect_timeout=5, **server)
    admin.autocommit = True
    name = f"studio_limits_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    password = f":{server['password']}" if server["password"] else ""
    yield f"postgresql+psycopg2://{server['user']}{password}@{server['host']}:{server['port']}/{name}"
    from resources.policies import shared_limits as module

    for url in [u for u in module._ENGINES if name in u]:
        module._ENGINES.pop(url).dispose()
        module._SHARED.pop(url, None)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, studio_home):
    if request.param == "sqlite":
        return f"sqlite:///{studio_home / 'limits.sqlite'}"
    return request.getfixturevalue("postgres_url")


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def limits_at(url: str, clock: Clock, lease_s: float = 30.0) -> SharedLimits:
    return SharedLimits(url, lease_s=lease_s, clock=clock)


def test_the_budget_refuses_past_the_limit_naming_the_campaign(url):
    limits = limits_at(url, Clock())
    budget = CampaignBudget(f"c-{uuid.uuid4().hex[:6]}", 1.0)
    first = limits.reserve(budget, 0.6)
    with pytest.raises(BudgetExceeded, match=rf"campaign '{budget.campaign_id}' budget exceeded: spent \$0.0000 \(\+\$0.6000 in flight\)"):
        limits.reserve(budget, 0.6)
    limits.settle(budget.campaign_id, first, 0.5)
    second = limits.reserve(budget, 0.5)
    limits.settle(budget.campaign_id, second, None)  # released: nothing spent
    assert limits.totals(budget.campaign_id) == {"campaign_id": budget.campaign_id, "spent_usd": 0.5, "calls": 1}
    with pytest.raises(ValueError, match="not a campaign id"):
        limits.reserve(CampaignBudget("../etc", 1.0), 0.1)


def test_a_reservation_whose_process_died_stops_counting(url):
    clock = Clock()
    limits = limits_at(url, clock)
    budget = CampaignBudget(f"c-{uuid.uuid4().hex[:6]}", 1.0)
    limits.reserve(budget, 1.0)  # never settled
    with pytest.raises(BudgetExceeded):
        limits.reserve(budget, 0.1)
    clock.now += 3601
    limits.reserve(budget, 1.0)


def test_slots_hold_the_capacity_and_a_dead_holders_lapse_with_its_lease(url):
    clock = Clock()
    limits = limits_at(url, clock, lease_s=10.0)
    provider = f"p-{uuid.uuid4().hex[:6]}"
    held = [limits.try_acquire_slot(provider, 2, "worker-a") for _ in range(2)]
    assert all(held) and limits.try_acquire_slot(provider, 2, "worker-b") is None
    limits.release_slot(held[0])
    assert limits.try_acquire_slot(provider, 2, "worker-b") is not None
    # worker-a dies holding held[1]; a renewed lease lives on, a lapsed one frees the slot.
    clock.now += 8
    limits.renew_slots([held[1]])
    clock.now += 8
    assert limits.slots_held(provider) == 1  # the renewed one; worker-b's lapsed
    clock.now += 11
    assert limits.slots_held(provider) == 0
    assert limits.try_acquire_slot(provider, 2, "worker-c") and limits.try_acquire_slot(provider, 2, "worker-c")


def test_the_rate_window_slides(url):
    clock = Clock()
    limits = limits_at(url, clock)
    provider = f"p-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        assert limits.take_request(provider, 3) == 0.0
        clock.now += 10
    # The first stops counting at +60 plus the allowance for its arrival at the provider.
    assert limits.take_request(provider, 3) == pytest.approx(30.0 + RATE_SEND_ALLOWANCE_S)
    clock.now += 30
    assert limits.take_request(provider, 3) == pytest.approx(RATE_SEND_ALLOWANCE_S)  # not yet
    clock.now += RATE_SEND_ALLOWANCE_S
    assert limits.take_request(provider, 3) == 0.0
    assert limits.take_request(provider, 3) == pytest.approx(10.0)


def test_a_cooldown_is_seen_by_everyone_and_a_shorter_one_does_not_shorten_it(url):
    clock = Clock()
    limits, other = limits_at(url, clock), limits_at(url, clock)
    provider = f"p-{uuid.uuid4().hex[:6]}"
    assert other.cooldown(provider) is None
    limits.set_cooldown(provider, 30, "rate limited (429)")
    limits.set_cooldown(provider, 5, "failed 3 times in a row")
    seen = other.cooldown(provider)
    assert seen.reason == "rate limited (429)" and seen.remaining_s(clock.now) == 30


def test_the_backend_follows_the_instance(studio_home, postgres_url):
    class PostgresStorage:
        postgres_url = "postgresql+psycopg2://x@127.0.0.1:5432/y"

    class Instance:
        run_storage = PostgresStorage()

    assert shared_limits_for().url == f"sqlite:///{studio_home / 'limits.sqlite'}"
    assert shared_limits_for(Instance(), url=postgres_url).url == postgres_url  # an explicit URL wins
    from resources.policies.shared_limits import instance_database_url

    assert instance_database_url(Instance()) == PostgresStorage.postgres_url
    assert instance_database_url(object()) is None


# -- across processes ------------------------------------------------------------------------


def _hold_slots(url: str, provider: str, count: int, ready, lease_s: float) -> None:
    limits = SharedLimits(url, lease_s=lease_s)
    for _ in range(count):
        assert limits.try_acquire_slot(provider, count, f"pid-{os.getpid()}")
    ready.set()
    time.sleep(600)  # killed before this ends


def _reserve_many(url: str, campaign: str, limit: float, price: float, calls: int, results) -> None:
    limits = SharedLimits(url)
    spent = 0
    for _ in range(calls):
        try:
            token = limits.reserve(CampaignBudget(campaign, limit), price)
        except BudgetExceeded:
            continue
        limits.settle(campaign, token, price)
        spent += 1
    results.put(spent)


def test_processes_share_the_budget_and_a_killed_holders_slots_lapse(url):
    context = multiprocessing.get_context("spawn")
    campaign, provider = f"c-{uuid.uuid4().hex[:6]}", f"p-{uuid.uuid4().hex[:6]}"
    results = context.Queue()
    workers = [context.Process(target=_reserve_many, args=(url, campaign, 3.0, 0.25, 10, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    paid = sum(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert paid == 12  # 4 workers x 10 tries, $3.00 at $0.25: exactly 12 across all of them
    assert SharedLimits(url).totals(campaign) == {"campaign_id": campaign, "spent_usd": 3.0, "calls": 12}

    ready = context.Event()
    holder = context.Process(target=_hold_slots, args=(url, provider, 2, ready, 2.0))
    holder.start()
    assert ready.wait(60)
    limits = SharedLimits(url)
    assert limits.try_acquire_slot(provider, 2, "me") is None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=30)
    deadline = time.time() + 10
    while limits.try_acquire_slot(provider, 2, "me") is None:
        assert time.time() < deadline, "the killed worker's slots were never released"
        time.sleep(0.2)


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_pooled_connection_is_pinged_only_after_sitting_idle(postgres_url, monkeypatch):
    """Back-to-back checkouts send no ping (a round trip and a server transaction each);
    a connection the server closed while it sat idle is replaced before the caller sees it."""
    engine = ping_when_idle(sa.create_engine(postgres_url, pool_size=1, max_overflow=0), idle_s=0.3)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: (pings.append(1), real_ping(connection))[1])
    try:
        first = _backend_pid(engine)
        for _ in range(20):
            assert _backend_pid(engine) == first  # the same pooled connection, not pinged
        assert pings == []
        time.sleep(0.4)
        assert _backend_pid(engine) == first  # idle: pinged, alive, kept
        assert len(pings) == 1
        admin = psycopg2.connect(dbname=sa.engine.make_url(postgres_url).database, connect_timeout=5, **_server())
        admin.autocommit = True
        with admin.cursor() as cursor:  # the server drops it while it sits in the pool (a restart, a failover)
            cursor.execute("SELECT pg_terminate_backend(%s)", (first,))
        admin.close()
        time.sleep(0.4)
        replacement = _backend_pid(engine)
        assert replacement != first
        assert len(pings) == 2
    finally:
        engine.dispose()
