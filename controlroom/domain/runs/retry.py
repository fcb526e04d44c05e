"""Retry backoff as a pure function of the policy and the attempt number."""

from dataclasses import dataclass

DEFAULT_BASE_DELAY_S = 2.0
DEFAULT_MAX_DELAY_S = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: base, 2*base, 4*base, … capped at `max_delay_s`."""

    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait before the attempt after `failed_attempt`."""
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempt - 1))
