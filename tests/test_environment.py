"""PAYMENTS_ENV means the same in every process, and a value that is neither
development nor production stops each of them at start: a typo must not
run production on the development secrets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from payment_svc.settings import Settings as PaymentSvcSettings
from payments_kit.environment import ConfigError, is_production
from reconciler.settings import Settings as ReconcilerSettings
from webhook_gateway.settings import Settings as GatewaySettings


@pytest.mark.parametrize(
    ("value", "production"),
    [
        (None, False),
        ("", False),
        ("development", False),
        ("production", True),
        (" production ", True),
    ],
)
def test_development_unless_production(value: str | None, production: bool) -> None:
    env = {} if value is None else {"PAYMENTS_ENV": value}
    assert is_production(env) is production


READERS: list[Callable[[Mapping[str, str]], Any]] = [
    PaymentSvcSettings.from_env,
    GatewaySettings.from_env,
    ReconcilerSettings.from_env,
]


@pytest.mark.parametrize("read", READERS, ids=["payment-svc", "webhook-gateway", "reconciler"])
@pytest.mark.parametrize("value", ["prod", "Production", "staging"])
def test_anything_else_refuses_to_start(
    read: Callable[[Mapping[str, str]], Any], value: str
) -> None:
    with pytest.raises(ConfigError, match="PAYMENTS_ENV must be development or production"):
        read({"PAYMENTS_ENV": value})
