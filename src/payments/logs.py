"""JSON logs for every process (structlog), with card numbers redacted.

Every line carries the process name, and whatever the request bound with
`structlog.contextvars` (request id, payment id). Values are never allowed to
carry a card number: a Luhn-valid run of digits is replaced, whatever the key.
Keys that name secrets are dropped outright.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from payment_svc.domain.cards import redact_card_numbers

_SECRET_KEYS = frozenset(
    {"authorization", "token", "api_key", "secret", "password", "payment_method"}
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[REDACTED]"
        elif isinstance(value, str):
            event_dict[key] = redact_card_numbers(value)
    return event_dict


def configure(process: str, level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(stream=sys.stdout, level=numeric, format="%(message)s")
    # The stripe SDK logs every request at INFO in its own format; ours say
    # what matters (payment_attempted, provider_outcome_unknown).
    logging.getLogger("stripe").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
