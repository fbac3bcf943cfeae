"""Injected faults, as set through `POST /_sim/faults` (names are a public contract)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_MAX_MS: Final = 600_000


class FaultsError(ValueError):
    """A fault setting that cannot be applied; the request must be corrected."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_after_charge_rate: float = 0.0
    timeout_after_charge_hold_ms: int = 30_000
    # Read by the webhook deliverer (deliverer.py) as each event is recorded.
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_reorder: bool = False
    webhook_delay_ms: int = 0
    # Refunds created through the API (or the control API) left `pending` until
    # `POST /_sim/refunds/{id}/settle`; rolled once per refund made.
    refund_pending_rate: float = 0.0
    # Refunds of pm_card_refundFail (succeeded at first, as on Stripe, or left
    # pending by refund_pending_rate) fail on their own this long after they
    # were made; 0: only when failed or settled by hand (POST
    # /_sim/refunds/{id}/fail, .../settle).
    refund_fail_after_ms: int = 3000
    # Stripe API routes that answer 503 (the provider unreachable for them
    # alone), each "METHOD /v1/path" matched exactly, query aside: e.g.
    # ["GET /v1/refunds"] fails the listing of an intent's refunds while the
    # rest answers (a provider incident that hits one path).
    unavailable_routes: tuple[str, ...] = ()

    def unavailable(self, method: str, path: str) -> bool:
        return bool(self.unavailable_routes) and f"{method} {path}" in self.unavailable_routes

    def to_json(self) -> dict[str, Any]:
        found = dataclasses.asdict(self)
        found["unavailable_routes"] = list(self.unavailable_routes)
        return found

    def merged(self, update: object) -> Faults:
        """A copy with `update` (a JSON object, possibly partial) applied, or FaultsError."""
        if not isinstance(update, Mapping):
            raise FaultsError("invalid_body", "the body must be a JSON object of fault settings")
        changes: dict[str, Any] = {}
        for name, value in update.items():
            check = _CHECKS.get(name)
            if check is None:
                known = ", ".join(sorted(_CHECKS))
                raise FaultsError("unknown_fault", f"unknown fault {name!r}; known: {known}")
            changes[name] = check(name, value)
        return dataclasses.replace(self, **changes)


def _milliseconds(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise FaultsError("invalid_value", f"{name} must be an integer from 0 to {_MAX_MS}")
    return value


def _rate(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise FaultsError("invalid_value", f"{name} must be a number from 0 to 1")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FaultsError("invalid_value", f"{name} must be true or false")
    return value


_METHODS: Final = ("GET", "POST")


def _routes(name: str, value: object) -> tuple[str, ...]:
    problem = f'{name} must be a list of at most 20 "GET /v1/..." or "POST /v1/..." strings'
    if not isinstance(value, list) or len(value) > 20:
        raise FaultsError("invalid_value", problem)
    routes = []
    for route in value:
        if not isinstance(route, str) or len(route) > 200:
            raise FaultsError("invalid_value", problem)
        method, _, path = route.partition(" ")
        if method not in _METHODS or not path.startswith("/v1/") or " " in path:
            raise FaultsError("invalid_value", problem)
        routes.append(route)
    return tuple(routes)


_CHECKS: Final[dict[str, Callable[[str, object], object]]] = {
    "latency_ms": _milliseconds,
    "error_rate": _rate,
    "timeout_after_charge_rate": _rate,
    "timeout_after_charge_hold_ms": _milliseconds,
    "webhook_drop_rate": _rate,
    "webhook_duplicate_rate": _rate,
    "webhook_reorder": _flag,
    "webhook_delay_ms": _milliseconds,
    "refund_pending_rate": _rate,
    "refund_fail_after_ms": _milliseconds,
    "unavailable_routes": _routes,
}
