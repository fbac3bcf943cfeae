"""Reading configuration values the same way in every process: addresses and
numbers from environment variables, with one error type that makes a process
refuse to start with a clear message."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar


class ConfigError(ValueError):
    """Bad configuration: the process refuses to start."""


def is_production(env: Mapping[str, str]) -> bool:
    """PAYMENTS_ENV, read the same way by every process: `production`
    refuses the development defaults (tokens, keys, secrets); `development`
    (the default) allows them. Anything else refuses to start: a typo such
    as `prod` must not quietly run production on development secrets."""
    value = env.get("PAYMENTS_ENV", "development").strip() or "development"
    if value not in ("development", "production"):
        raise ConfigError(f"PAYMENTS_ENV must be development or production, got {value!r}")
    return value == "production"


def split_address(name: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_payment_svc_client(target: str, token_name: str, token: str) -> None:
    """What every payment-svc client (gateway, reconciler) needs: a target,
    and a bearer token that fits in a gRPC metadata value."""
    if not target.strip():
        raise ConfigError("PAYMENT_SVC_TARGET must be host:port")
    if not token or not token.isprintable() or not token.isascii():
        raise ConfigError(f"{token_name} must be a non-empty printable ASCII token")


_N = TypeVar("_N", int, float)


def number(kind: type[_N], name: str, raw: str) -> _N:
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {noun}, got {raw!r}")
    return value
