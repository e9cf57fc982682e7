"""Variants racing for the last dollars of a budget, from threads and from processes, never overspend.

On the embedded default's shared ledger (SQLite under STUDIO_HOME); tests/test_shared_limits.py
races processes on Postgres too."""

import concurrent.futures
import math
import multiprocessing
import threading
import time

import pytest
import sqlalchemy as sa

from resources.policies.budget import BudgetExceeded, CampaignBudget
from resources.policies.shared_limits import SharedLimits

LIMIT = 1.00
PRICE = 0.07  # 14 calls fit; the 15th would pass the limit


def _url(root) -> str:
    return f"sqlite:///{root}/limits.sqlite"


def _race(root: str, campaign: str, calls: int, barrier=None, start_at: float | None = None) -> tuple[int, int]:
    """Reserve and settle `calls` times; (spent, refused)."""
    ledger = SharedLimits(_url(root))
    spent = refused = 0
    if barrier is not None:
        barrier.wait()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    for _ in range(calls):
        try:
            token = ledger.reserve(CampaignBudget(campaign, LIMIT), PRICE)
        except BudgetExceeded:
            refused += 1
            continue
        ledger.settle(campaign, token, PRICE)
        spent += 1
    return spent, refused


def _state(root, campaign) -> dict:
    ledger = SharedLimits(_url(root))
    with ledger.engine.connect() as conn:
        reserved = conn.execute(
            sa.select(sa.func.count()).select_from(ledger.t["reservations"]).where(ledger.t["reservations"].c.campaign_id == campaign)
        ).scalar()
    return {**ledger.totals(campaign), "reserved": reserved}


def test_threads_never_overspend(tmp_path):
    workers = 24
    barrier = threading.Barrier(workers)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda _: _race(str(tmp_path), "threaded", 3, barrier), range(workers)))
    spent = sum(s for s, _ in outcomes)
    assert spent == math.floor(LIMIT / PRICE + 1e-9) == 14
    assert sum(r for _, r in outcomes) == workers * 3 - spent
    state = _state(tmp_path, "threaded")
    assert state["spent_usd"] == pytest.approx(spent * PRICE) and state["spent_usd"] <= LIMIT + 1e-9
    assert state["calls"] == spent and state["reserved"] == 0


def test_processes_and_threads_together_never_overspend(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = 6
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        list(pool.map(_race, [str(tmp_path)] * processes, ["warm-up"] * processes, [0] * processes))  # workers up, module imported
        start_at = time.time() + 1.0
        remote = [pool.submit(_race, str(tmp_path), "mixed", 5, None, start_at) for _ in range(processes)]
        # The threads ask for 12 calls at most: the 14 that fit cannot all go to them, however
        # SQLite's locking favours this process (on a loaded CI machine it took all 14 once).
        with concurrent.futures.ThreadPoolExecutor(6) as threads:
            local = list(threads.map(lambda _: _race(str(tmp_path), "mixed", 2, None, start_at), range(6)))
        outcomes = [f.result() for f in remote] + local
    spent = sum(s for s, _ in outcomes)
    assert spent == 14, outcomes
    assert sum(s for s, _ in outcomes[:processes]) >= 2  # the processes really took part
    state = _state(tmp_path, "mixed")
    assert state["spent_usd"] <= LIMIT + 1e-9 and state["spent_usd"] == pytest.approx(14 * PRICE)
    assert state["reserved"] == 0


def test_in_flight_reservations_count_against_the_budget(tmp_path):
    """Reserved-but-unsettled calls hold their share: no one can slip in under them."""
    ledger = SharedLimits(_url(tmp_path))
    budget = CampaignBudget("held", LIMIT)
    tokens = [ledger.reserve(budget, 0.3) for _ in range(3)]
    with pytest.raises(BudgetExceeded, match="in flight"):
        ledger.reserve(budget, 0.2)
    ledger.settle("held", tokens[0], None)  # a failed call releases its share
    ledger.reserve(budget, 0.2)
