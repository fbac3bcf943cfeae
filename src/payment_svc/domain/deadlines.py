"""How one payment attempt spends its caller's time.

    caller's deadline ──────────────────────────────────────────────┐
    │ provider call                   │ result write (retried)  │ answer │
    └ min(PROVIDER_TIMEOUT_SECONDS,   └ reserve: DB_TIMEOUT_SECONDS, └ slack
          what is left less the reserve)  at most half of what is left

The provider gets what the caller can wait for, less a reserve for writing
its answer (one database call's bound, at most half of the time left), and
never more than PROVIDER_TIMEOUT_SECONDS. When that runs out the payment is
UNKNOWN, recorded, and UNKNOWN is the answer, before the caller's deadline.
A call without a deadline gets the whole provider timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kept back from the caller's deadline for the reply to travel.
ANSWER_SLACK_SECONDS = 0.1


@dataclass(frozen=True)
class AttemptBudget:
    provider_timeout: float
    write_reserve: float

    def provider_seconds(self, left: float | None) -> float:
        """The bound of the provider call, with `left` seconds to the
        caller's deadline (None: no deadline)."""
        if left is None:
            return self.provider_timeout
        usable = left - ANSWER_SLACK_SECONDS
        reserve = min(self.write_reserve, usable / 2)
        return max(0.0, min(self.provider_timeout, usable - reserve))

    def write_seconds(self, left: float | None) -> float:
        """How long the answer's write may be retried, with `left` seconds
        to the caller's deadline (None: one database call's bound)."""
        if left is None:
            return self.write_reserve
        return left - ANSWER_SLACK_SECONDS
