"""Retries with exponential backoff and full jitter; Retry-After honoured up to a cap."""

import random
from dataclasses import dataclass

from model_adapters.types import AdapterError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # per provider, the first call included
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    retry_after_cap_s: float = 60.0  # a provider asking for longer is skipped instead

    def should_retry(self, error: AdapterError, attempt: int) -> bool:
        """`attempt` is 1 for the first call."""
        if not error.retryable or attempt >= self.max_attempts:
            return False
        return error.retry_after_s is None or error.retry_after_s <= self.retry_after_cap_s

    def delay_s(self, error: AdapterError, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before attempt `attempt + 1`: the provider's Retry-After when given,
        else exponential backoff with full jitter (AWS style) so variants that
        failed together do not retry together."""
        if error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.0), self.retry_after_cap_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)
