"""Cooldown: a provider that rate-limits, refuses our key, keeps failing or is misconfigured is skipped for a while.

One tracker per process, shared by every variant and every step in it, so
twenty variants do not each discover that a provider is down; with `shared`
(resources/policies/shared_limits.py) a cooldown one worker sets is seen by
every other worker within `SHARED_REFRESH_S`. A provider is
taken as misconfigured when its endpoint does not exist (404) or takes no
such method (405), or when it answers 400 with the same error
`config_errors_to_trip` times in a row: it is cooled down for
`config_error_s`, and the refusal says why. With the router's first-call
probe (a provider that has not answered yet gets one call at a time), a
misconfigured provider costs one or two calls per process, not one per variant.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from model_adapters.types import AdapterError, AuthError, RateLimited

if TYPE_CHECKING:  # for annotations only: the tracker never needs SQLAlchemy unless `shared` is set
    from resources.policies.shared_limits import SharedLimits


@dataclass
class CooldownTracker:
    default_s: float = 30.0
    auth_s: float = 300.0
    failures_to_trip: int = 3  # consecutive retryable failures
    config_error_s: float = 300.0  # after a 404/405, or the same 400 `config_errors_to_trip` times in a row
    config_errors_to_trip: int = 2
    clock: Callable[[], float] = time.monotonic
    _until: dict[str, float] = field(default_factory=dict)
    _why: dict[str, str] = field(default_factory=dict)
    _streak: dict[str, int] = field(default_factory=dict)
    _same_400: dict[str, tuple[str, int]] = field(default_factory=dict)  # provider -> (error, times in a row)
    _answered: set[str] = field(default_factory=set)  # providers that have answered once in this process
    _lock: threading.Lock = field(default_factory=threading.Lock)
    shared: "SharedLimits | None" = None  # cooldowns every worker sees
    _seen: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # provider -> (read at, until (wall), why)

    def configure(
        self,
        *,
        default_s: float,
        auth_s: float,
        failures_to_trip: int,
        config_error_s: float = 300.0,
        config_errors_to_trip: int = 2,
        shared: "SharedLimits | None" = None,
    ) -> None:
        """Apply the routing config's cooldown defaults (the tracker outlives any one config)."""
        with self._lock:
            self.default_s, self.auth_s, self.failures_to_trip = default_s, auth_s, failures_to_trip
            self.config_error_s, self.config_errors_to_trip = config_error_s, config_errors_to_trip
            if shared is not self.shared:
                self.shared, self._seen = shared, {}

    def _shared_cooldown(self, provider_id: str) -> tuple[float, str]:
        """(seconds left, why) of the cooldown every worker sees; read at most once a
        SHARED_REFRESH_S per provider (the probe loop asks every few milliseconds)."""
        shared = self.shared
        if shared is None:
            return 0.0, ""
        now = time.monotonic()
        seen = self._seen.get(provider_id)
        if seen is None or now - seen[0] > SHARED_REFRESH_S:
            cooldown = shared.cooldown(provider_id)
            seen = (now, cooldown.until if cooldown else 0.0, cooldown.reason if cooldown else "")
            self._seen[provider_id] = seen
        return max(0.0, seen[1] - shared.clock()), seen[2]

    def remaining_s(self, provider_id: str) -> float:
        with self._lock:
            local = max(0.0, self._until.get(provider_id, 0.0) - self.clock())
        return max(local, self._shared_cooldown(provider_id)[0])

    def reason(self, provider_id: str) -> str:
        """Why the provider is (or was last) cooling down."""
        with self._lock:
            local = self._why.get(provider_id, "") if self._until.get(provider_id, 0.0) > self.clock() else ""
        remaining, why = self._shared_cooldown(provider_id)
        return local or (why if remaining > 0 else "") or self._why.get(provider_id, "")

    def has_answered(self, provider_id: str) -> bool:
        with self._lock:
            return provider_id in self._answered

    def record_success(self, provider_id: str) -> None:
        with self._lock:
            self._streak.pop(provider_id, None)
            self._same_400.pop(provider_id, None)
            self._answered.add(provider_id)

    def record_failure(self, provider_id: str, error: AdapterError) -> float:
        """Returns the cooldown now in force for the provider (0 if none)."""
        with self._lock:
            seconds, why = 0.0, ""
            if isinstance(error, RateLimited):
                seconds = error.retry_after_s if error.retry_after_s is not None else self.default_s
                why = "rate limited (429)"
            elif isinstance(error, AuthError):
                seconds, why = self.auth_s, f"refused our key ({error.status or 'auth'})"
            elif error.status in (404, 405):
                seconds = self.config_error_s
                why = f"answered {error.status}: the endpoint or method does not exist there (check base_url and model)"
            elif error.status == 400:
                text = str(error)
                previous, times = self._same_400.get(provider_id, ("", 0))
                times = times + 1 if text == previous else 1
                self._same_400[provider_id] = (text, times)
                if times >= self.config_errors_to_trip:
                    seconds, why = self.config_error_s, f"answered 400 with the same error {times} times in a row: {text[-160:]}"
                    self._same_400.pop(provider_id, None)
            elif error.retryable:
                self._streak[provider_id] = self._streak.get(provider_id, 0) + 1
                if self._streak[provider_id] >= self.failures_to_trip:
                    seconds, why = self.default_s, f"failed {self._streak[provider_id]} times in a row"
                    self._streak[provider_id] = 0
            if seconds > 0:
                self._until[provider_id] = max(self._until.get(provider_id, 0.0), self.clock() + seconds)
                self._why[provider_id] = why
            remaining = max(0.0, self._until.get(provider_id, 0.0) - self.clock())
            shared = self.shared
        if seconds > 0 and shared is not None:
            shared.set_cooldown(provider_id, seconds, why)
            self._seen.pop(provider_id, None)  # read it back on the next ask
        return remaining

    def reset(self) -> None:
        """Forget every cooldown, the shared ones too (tests; an operator after a fix)."""
        with self._lock:
            if self.shared is not None:
                try:
                    self.shared.clear_cooldowns()
                except Exception:  # its database is gone (a test's, dropped): nothing left to clear
                    pass
            self.shared, self._seen = None, {}
            self._until.clear()
            self._why.clear()
            self._streak.clear()
            self._same_400.clear()
            self._answered.clear()


SHARED_REFRESH_S = 1.0

# The process-wide tracker the router uses.
PROCESS_COOLDOWNS = CooldownTracker()
