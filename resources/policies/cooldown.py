"""Cooldown: a provider that rate-limits, refuses our key or keeps failing is skipped for a while.

One tracker per process, shared by every variant and every step in it, so
twenty variants do not each discover that a provider is down.
"""

import threading
import time
from dataclasses import dataclass, field

from model_adapters.types import AdapterError, AuthError, RateLimited


@dataclass
class CooldownTracker:
    default_s: float = 30.0
    auth_s: float = 300.0
    failures_to_trip: int = 3  # consecutive retryable failures
    clock: "callable" = time.monotonic
    _until: dict[str, float] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, *, default_s: float, auth_s: float, failures_to_trip: int) -> None:
        """Apply the routing config's cooldown defaults (the tracker outlives any one config)."""
        with self._lock:
            self.default_s, self.auth_s, self.failures_to_trip = default_s, auth_s, failures_to_trip

    def remaining_s(self, provider_id: str) -> float:
        with self._lock:
            return max(0.0, self._until.get(provider_id, 0.0) - self.clock())

    def record_success(self, provider_id: str) -> None:
        with self._lock:
            self._streak.pop(provider_id, None)

    def record_failure(self, provider_id: str, error: AdapterError) -> float:
        """Returns the cooldown now in force for the provider (0 if none)."""
        with self._lock:
            seconds = 0.0
            if isinstance(error, RateLimited):
                seconds = error.retry_after_s if error.retry_after_s is not None else self.default_s
            elif isinstance(error, AuthError):
                seconds = self.auth_s
            elif error.retryable:
                self._streak[provider_id] = self._streak.get(provider_id, 0) + 1
                if self._streak[provider_id] >= self.failures_to_trip:
                    seconds = self.default_s
                    self._streak[provider_id] = 0
            if seconds > 0:
                self._until[provider_id] = max(self._until.get(provider_id, 0.0), self.clock() + seconds)
            return max(0.0, self._until.get(provider_id, 0.0) - self.clock())

    def reset(self) -> None:
        with self._lock:
            self._until.clear()
            self._streak.clear()


# The process-wide tracker the router uses.
PROCESS_COOLDOWNS = CooldownTracker()
