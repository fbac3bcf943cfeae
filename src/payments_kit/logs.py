"""JSON logs for every process (structlog), with card numbers redacted.

Every line carries the process name, and whatever the request bound with
`structlog.contextvars` (request id, payment id). Values are never allowed to
carry a card number (the rule of `payments_kit.cards`), whatever the
key, nested values, numbers, exception text and tracebacks included. Keys
that name secrets are dropped outright.

Records of the standard library's `logging` (grpcio's, asyncpg's, aiohttp's,
asyncio's, warnings) go through the same processors: the root logger has one
handler, whose `ProcessorFormatter` renders them as our JSON lines, redacted.
Uncaught exceptions (main thread, other threads, "exception ignored") are
logged the same way rather than printed raw to stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

import structlog

from payments_kit.cards import redact_card_numbers, redact_value

_SECRET_KEYS = frozenset(
    {"authorization", "token", "api_key", "secret", "password", "payment_method"}
)


def _redacted(value: Any) -> Any:
    try:
        if value is None or isinstance(value, str | bool | int | float | Mapping | list | tuple):
            return redact_value(value)
        # What JSONRenderer would write for any other object: its repr.
        return redact_card_numbers(repr(value))
    except RecursionError:
        return "[NOT LOGGED: nested too deep]"


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.startswith("_"):  # ProcessorFormatter's own (_record, _from_structlog)
            continue
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[REDACTED]"
        else:
            event_dict[key] = _redacted(event_dict[key])
    return event_dict


def _stdlib_logger_name(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict["logger"] = record.name
    return event_dict


class _RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's one handler (marked, so configure() replaces it)."""


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("uncaught").critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        logging.getLogger("uncaught").error(
            "uncaught_thread_exception",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )


def _log_unraisable(unraisable: Any) -> None:
    value = unraisable.exc_value
    if value is not None:
        logging.getLogger("uncaught").warning(
            "exception_ignored", exc_info=(type(value), value, value.__traceback__)
        )


def configure(process: str, level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = _RedactingHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _stdlib_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call, and basicConfig's console handlers
        if isinstance(old, _RedactingHandler) or getattr(old, "stream", None) in (
            sys.stdout,
            sys.stderr,
        ):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # A record that cannot be formatted is dropped, not printed raw with its
    # arguments to stderr.
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
    # The stripe SDK logs every request at INFO in its own format; ours say
    # what matters (payment_attempted, provider_outcome_unknown).
    logging.getLogger("stripe").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
