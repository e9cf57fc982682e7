"""Budgets: a campaign never spends more than its brief allows.

Before a call the router reserves the call's estimated cost; the reservation
is refused if spent + reserved + estimate would pass the limit, with a
message naming the campaign, the spend and the limit. After the call the
reservation becomes the actual cost (or is released on failure). The ledger
is a JSON file per campaign under a file lock, so concurrent variants, steps
and runs on one host share it; stale reservations of a crashed process
expire.
"""

import fcntl
import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RESERVATION_TTL_S = 3600.0
_CAMPAIGN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class BudgetExceeded(Exception):
    def __init__(self, campaign_id: str, spent: float, reserved: float, estimate: float, limit: float):
        self.campaign_id, self.spent, self.limit = campaign_id, spent, limit
        super().__init__(
            f"campaign {campaign_id!r} budget exceeded: spent ${spent:.4f}"
            + (f" (+${reserved:.4f} in flight)" if reserved else "")
            + f", this call would add ${estimate:.4f}, limit ${limit:.2f}"
        )


@dataclass(frozen=True)
class CampaignBudget:
    campaign_id: str
    limit_usd: float


class BudgetLedger:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, campaign_id: str) -> Path:
        if not isinstance(campaign_id, str) or not _CAMPAIGN.fullmatch(campaign_id):
            raise ValueError(f"not a campaign id: {campaign_id!r}")
        return self.root / f"{campaign_id}.json"

    @contextmanager
    def _locked(self, campaign_id: str):
        path = self._path(campaign_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(path.read_text()) if path.exists() else {"spent_usd": 0.0, "calls": 0, "reserved": {}}
                now = time.time()
                state["reserved"] = {k: v for k, v in state["reserved"].items() if now - v["at"] < RESERVATION_TTL_S}
                yield state
                tmp = path.with_suffix(f".tmp-{os.getpid()}")
                tmp.write_text(json.dumps(state, sort_keys=True))
                os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reserve(self, budget: CampaignBudget, estimate_usd: float) -> str:
        with self._locked(budget.campaign_id) as state:
            reserved = sum(r["usd"] for r in state["reserved"].values())
            if state["spent_usd"] + reserved + estimate_usd > budget.limit_usd + 1e-9:
                raise BudgetExceeded(budget.campaign_id, state["spent_usd"], reserved, estimate_usd, budget.limit_usd)
            token = uuid.uuid4().hex
            state["reserved"][token] = {"usd": estimate_usd, "at": time.time()}
            return token

    def settle(self, campaign_id: str, token: str, actual_usd: float | None) -> None:
        """Turn a reservation into spend (`actual_usd`), or release it (None)."""
        with self._locked(campaign_id) as state:
            state["reserved"].pop(token, None)
            if actual_usd is not None:
                state["spent_usd"] += actual_usd
                state["calls"] += 1

    def totals(self, campaign_id: str) -> dict:
        path = self._path(campaign_id)
        if not path.exists():
            return {"campaign_id": campaign_id, "spent_usd": 0.0, "calls": 0}
        state = json.loads(path.read_text())
        return {"campaign_id": campaign_id, "spent_usd": state["spent_usd"], "calls": state["calls"]}
