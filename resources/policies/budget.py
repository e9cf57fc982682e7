"""Budgets: a campaign never spends more than its brief allows.

Before a call the router reserves the call's estimated cost; the reservation
is refused if spent + reserved + estimate would pass the limit, with a
message naming the campaign, the spend and the limit. After the call the
reservation becomes the actual cost (or is released on failure). The ledger
itself is one of the shared limits (resources/policies/shared_limits.py):
tables every worker of the instance shares.
"""

from dataclasses import dataclass


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
