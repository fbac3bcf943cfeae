"""Reading configuration values the same way in every process: addresses and
numbers from environment variables, with one error type that makes a process
refuse to start with a clear message."""

from __future__ import annotations

import math
from typing import TypeVar


class ConfigError(ValueError):
    """Bad configuration: the process refuses to start."""


def split_address(name: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


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
