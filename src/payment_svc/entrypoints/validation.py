"""The floor under every request's fields, checked before a servicer sees it.

    every string     no NUL (Postgres text refuses it); ids (`*_id`, `*_ids`,
                     `name`) at most 255 characters (they are index keys),
                     anything else at most 10,000
    every Timestamp  0001-01-01 .. 9999-12-31, nanos 0 .. 999,999,999
    every Duration   proto's range (about 10,000 years), nanos within a
                     second and of the same sign
    every list, map  at most 1,000 entries

Lone surrogates never get this far: protobuf refuses strings that are not
UTF-8, and a body it cannot parse at all (bad UTF-8, a corrupt wire format)
is INVALID_ARGUMENT here too, not grpcio's UNKNOWN with the parser's text.
The rules of each field (amount ranges, id shapes, lengths of a
description) stay with the commands and use cases; this only guarantees
that nothing reaching them can break the database or the datetime types.
Violations name the field, never the value (it may be card data).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from payment_svc.domain.errors import FieldViolation, InvalidArgument
from payment_svc.entrypoints import convert
from payments.v1 import payment_service_pb2 as svc

MAX_ID_CHARS = 255
MAX_TEXT_CHARS = 10_000
MAX_ITEMS = 1_000
# google.protobuf.Timestamp's documented range.
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
# google.protobuf.Duration's documented range (+-10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999


def _text(path: str, name: str, value: str) -> Iterator[FieldViolation]:
    if "\x00" in value:
        yield FieldViolation(path, "must not contain NUL characters")
    limit = MAX_ID_CHARS if name.endswith(("_id", "_ids")) or name == "name" else MAX_TEXT_CHARS
    if len(value) > limit:
        yield FieldViolation(path, f"must be at most {limit} characters")


def _well_known(path: str, message: Message) -> Iterator[FieldViolation]:
    full_name = message.DESCRIPTOR.full_name
    seconds: int = getattr(message, "seconds", 0)
    nanos: int = getattr(message, "nanos", 0)
    if full_name == "google.protobuf.Timestamp":
        if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS or not (
            0 <= nanos <= _NANOS
        ):
            yield FieldViolation(path, "must be a time between the years 1 and 9999")
    elif full_name == "google.protobuf.Duration" and (
        abs(seconds) > MAX_DURATION_SECONDS
        or abs(nanos) > _NANOS
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        yield FieldViolation(path, "must be a duration within 10,000 years")


def violations(message: Message, prefix: str = "") -> Iterator[FieldViolation]:
    """Every breach of the floor in `message`, its sub-messages, lists and maps."""
    yield from _well_known(prefix.rstrip(".") or "request", message)
    field: FieldDescriptor
    value: Any
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if len(value) > MAX_ITEMS:
                yield FieldViolation(path, f"must have at most {MAX_ITEMS} entries")
            for key, item in value.items():
                if isinstance(key, str):
                    yield from _text(path, field.name, key)
                yield from _value(path, field, item)
        elif field.is_repeated:
            if len(value) > MAX_ITEMS:
                yield FieldViolation(path, f"must have at most {MAX_ITEMS} entries")
            for item in value:
                yield from _value(path, field, item)
        else:
            yield from _value(path, field, value)


def _value(path: str, field: FieldDescriptor, value: Any) -> Iterator[FieldViolation]:
    if isinstance(value, str):
        yield from _text(path, field.name, value)
    elif isinstance(value, Message):
        yield from violations(value, path + ".")


class _Undecodable:
    """Stands for a request body protobuf could not parse."""


UNDECODABLE = _Undecodable()
_UNDECODABLE_REQUEST = FieldViolation("request", "is not a valid message of this method")


def _lenient(deserializer: Any) -> Any:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError and kin: the body is the caller's fault
            return UNDECODABLE

    return parse


# The requests whose command has rules of its own (domain/commands.py): when
# the floor refuses one, the command's violations join the answer, so that a
# caller learns every invalid field at once (a NUL in `description` and a
# negative `amount` beside it), not one per round trip.
_COMMANDS: dict[type[Message], Any] = {
    svc.CreatePaymentRequest: convert.create_command,
    svc.RefundPaymentRequest: convert.refund_command,
}


def _command_violations(message: Message) -> list[FieldViolation]:
    build = _COMMANDS.get(type(message))
    if build is None:
        return []
    try:
        build(message).validate()
    except InvalidArgument as exc:
        return list(exc.violations)
    except Exception:  # a value the command cannot even hold: the floor said why
        return []
    return []


def check(message: Message) -> None:
    """Raises InvalidArgument naming each field below the floor (once each),
    with the command's own violations beside them."""
    found = list(dict.fromkeys(violations(message)))
    if found:
        raise InvalidArgument(list(dict.fromkeys([*found, *_command_violations(message)])))


def _checked_stream(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same floor under a server-streaming method's request (the change
    feed's WatchPaymentUpdates); the error ends the stream before anything is
    sent, mapped like any other by the CallPipeline's stream guard."""
    inner = cast(Any, handler.unary_stream)

    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request is UNDECODABLE:
            raise InvalidArgument(
                [FieldViolation("request", "is not a valid message of this method")]
            )
        check(request)
        async for message in inner(request, context):
            yield message

    built: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(
        checked,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
    return built


class RequestFloor(grpc.aio.ServerInterceptor):
    """Runs `check` on every request of our services (unary, and the
    server-streaming ones), inside the
    CallPipeline (so after authentication, and its InvalidArgument becomes a
    rich INVALID_ARGUMENT like any other)."""

    def __init__(self, services: frozenset[str]) -> None:
        self._services = services
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    async def intercept_service(
        self,
        continuation: Any,
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(details)
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if handler is not None and handler.unary_unary is not None and service in self._services:
            inner = cast(Any, handler.unary_unary)

            async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if request is UNDECODABLE:
                    raise InvalidArgument(
                        [FieldViolation("request", "is not a valid message of this method")]
                    )
                check(request)
                return await inner(request, context)

            handler = grpc.unary_unary_rpc_method_handler(
                checked,
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        elif handler is not None and handler.unary_stream is not None and service in self._services:
            handler = _checked_stream(handler)
        self._handlers[method] = handler
        return handler
