"""Authorization is one default-deny table, method -> roles, checked in one
place: every method of every service, with every kind of token, over a real
channel; and a method the table does not name is refused to everyone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor, message_factory

from payment_svc.entrypoints.interceptors import METHOD_ROLES, CallPipeline
from payment_svc.settings import Role, Settings
from payments.v1 import (
    payment_service_pb2,
    provider_sync_service_pb2,
    webhook_dispatch_service_pb2,
)
from payments_dev.stack import DEV_TOKENS

SERVICES = [
    service
    for module in (payment_service_pb2, provider_sync_service_pb2, webhook_dispatch_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS = [(service, method) for service in SERVICES for method in service.methods]

# The callers: each development token's role, a call with no token, a bogus one.
TOKENS: dict[str, tuple[tuple[str, str], ...]] = {
    **{who: (("authorization", f"Bearer {token}"),) for who, token in DEV_TOKENS.items()},
    "none": (),
    "bogus": (("authorization", "Bearer not-a-token"),),
}
ROLE_OF = {
    "merchant": Role.MERCHANT,
    "merchant-2": Role.MERCHANT,
    "gateway": Role.GATEWAY,
    "reconciler": Role.RECONCILER,
    "dispatcher": Role.DISPATCHER,
}


def expected_roles(service: descriptor.ServiceDescriptor, method: str) -> frozenset[Role]:
    """The rule, written out independently of the table it checks."""
    if service.full_name == "payments.v1.PaymentService":
        return frozenset({Role.MERCHANT})
    if service.full_name == "payments.v1.WebhookDispatchService":
        return frozenset({Role.DISPATCHER})
    if method == "ApplyProviderEvent":
        return frozenset({Role.GATEWAY, Role.RECONCILER})
    return frozenset({Role.RECONCILER})


def path(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> str:
    return f"/{service.full_name}/{method.name}"


def test_the_table_names_every_method_and_nothing_else() -> None:
    assert set(METHOD_ROLES) == {path(s, m) for s, m in METHODS}
    for service, method in METHODS:
        assert METHOD_ROLES[path(service, method)] == expected_roles(service, method.name)


async def _code(
    channel: grpc.aio.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
    metadata: tuple[tuple[str, str], ...],
) -> grpc.StatusCode:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    if method.server_streaming:
        # A stream let through stays open (WatchPaymentUpdates waits for
        # updates): its headers say it was; a refusal ends it at once.
        stream = channel.unary_stream(
            path(service, method),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )(request_class(), metadata=metadata, timeout=5)
        await stream.initial_metadata()
        try:
            return await asyncio.wait_for(stream.code(), 0.5)
        except TimeoutError:
            stream.cancel()
            return grpc.StatusCode.OK
    call = channel.unary_unary(
        path(service, method),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        await call(request_class(), metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda x: x.name)
async def test_every_method_with_every_token(
    channel: grpc.aio.Channel,
    service: descriptor.ServiceDescriptor,
    method: descriptor.MethodDescriptor,
) -> None:
    allowed = expected_roles(service, method.name)
    seen = {}
    for who, metadata in TOKENS.items():
        seen[who] = await _code(channel, service, method, metadata)
    for who, code in seen.items():
        if who in ("none", "bogus"):
            assert code == grpc.StatusCode.UNAUTHENTICATED, (who, code)
        elif ROLE_OF[who] in allowed:
            # Past authorization: an empty request is answered on its merits.
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ), (who, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (who, code)


# A service the table knows nothing of, with a unary and a streaming method,
# behind the real interceptor on a real server (port 0).
UNLISTED = "payments.v1.Unlisted"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _watch(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield request


@pytest.fixture
async def unlisted() -> AsyncIterator[grpc.aio.Channel]:
    principals = Settings.from_env({"DATABASE_URL": "postgresql://unused/db"}).principals
    table = {f"/{UNLISTED}/WatchAllowed": frozenset({Role.RECONCILER})}
    server = grpc.aio.server(interceptors=[CallPipeline(principals, 5.0, table)])
    identity = {"request_deserializer": None, "response_serializer": None}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                UNLISTED,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(_echo, **identity),
                    "Watch": grpc.unary_stream_rpc_method_handler(_watch, **identity),
                    "WatchAllowed": grpc.unary_stream_rpc_method_handler(_watch, **identity),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


async def _unlisted_code(
    channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, list[bytes]]:
    name = f"/{UNLISTED}/{method}"
    got: list[bytes] = []
    try:
        if method == "Echo":
            got.append(await channel.unary_unary(name)(b"hi", metadata=metadata, timeout=5))
        else:
            async for reply in channel.unary_stream(name)(b"hi", metadata=metadata, timeout=5):
                got.append(reply)
    except grpc.aio.AioRpcError as err:
        return err.code(), got
    return grpc.StatusCode.OK, got


async def test_a_method_without_an_entry_is_refused_to_everyone(
    unlisted: grpc.aio.Channel,
) -> None:
    for method in ("Echo", "Watch"):
        for who, metadata in TOKENS.items():
            code, got = await _unlisted_code(unlisted, method, metadata)
            expected = (
                grpc.StatusCode.UNAUTHENTICATED
                if who in ("none", "bogus")
                else grpc.StatusCode.PERMISSION_DENIED
            )
            assert (code, got) == (expected, []), (method, who)
    # A streaming method with an entry is checked the same way.
    for who, metadata in TOKENS.items():
        code, got = await _unlisted_code(unlisted, "WatchAllowed", metadata)
        if who == "reconciler":
            assert (code, got) == (grpc.StatusCode.OK, [b"hi", b"hi"])
        elif who in ("none", "bogus"):
            assert code == grpc.StatusCode.UNAUTHENTICATED
        else:
            assert (code, got) == (grpc.StatusCode.PERMISSION_DENIED, []), who
