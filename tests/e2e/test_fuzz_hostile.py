"""Issue 10: property-based fuzzing with hostile input, against real processes.

    the gateway     the real aiohttp application (init_app) forwarding to the
                    session's payment-svc process; hostile events (NaN, NUL,
                    lone surrogates, deep nesting, numbers out of range, card
                    numbers, ids of any length), signed or not. A signed
                    delivery is always acknowledged with 200 (recorded, or
                    quarantined: a retry could never help); an unsigned one is
                    a 4xx; nothing is ever a 5xx while payment-svc is up.
    every RPC       of PaymentService and ProviderSyncService, with each token
                    (merchant, gateway, reconciler, none, a wrong one), with
                    requests built field by field from the descriptors
                    (hostile strings, int64 extremes, Timestamps and Durations
                    out of range, forged page tokens, hostile payloads): no
                    UNKNOWN, INTERNAL, DATA_LOSS or UNIMPLEMENTED, ever.

Afterwards payment-svc is still running and serving.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payments.v1 import payment_service_pb2 as svc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import webhook_dispatch_service_pb2 as dispatch
from payments.v1 import webhooks_pb2 as wh
from payments_dev.stack import DEV_TOKENS, Stack
from payments_stripe.signature import sign
from tests.support import auth, create_request, stub
from webhook_gateway.app import init_app
from webhook_gateway.settings import Settings as GatewaySettings

T = TypeVar("T")
SECRET = "whsec_fuzz"
PAN = "4242424242424242"
FUZZ = hypothesis_settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
# Each example is a round trip to real processes: the test's budget grows with
# its examples (pytest-timeout's default 120 s is for one scenario), an upper
# bound that catches a hang, never a speed the test asserts.
SECONDS_PER_EXAMPLE = 0.2  # about 30 times what one takes on a quiet 2-core machine


def fuzz(examples: int) -> Callable[[T], T]:
    """FUZZ with this many examples, and a timeout that fits them."""

    def apply(test: T) -> T:
        budget = pytest.mark.timeout(60 + examples * SECONDS_PER_EXAMPLE)
        return budget(hypothesis_settings(FUZZ, max_examples=examples)(test))

    return apply


HOSTILE_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    PAN,
    "4000 0566 5566 5556",
    "x" * 300,
    "y" * 5000,
    "\u202e\u0301💳",
    "' OR 1=1 --",
    "evt_" + "9" * 40,
    "NaN",
]
HOSTILE_INTS = [0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**20, 10**400]
texts = st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE_TEXT))
numbers = st.one_of(
    st.integers(), st.sampled_from(HOSTILE_INTS), st.floats(allow_nan=True, allow_infinity=True)
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
hostile = st.one_of(json_values, texts, numbers)
EVENT_TYPES = [
    "payment_intent.processing",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "charge.dispute.created",
    "x.future",
]


@st.composite
def provider_objects(draw: st.DrawFn) -> dict[str, Any]:
    sane: dict[str, Any] = {
        "id": f"pi_{uuid.uuid4().hex[:16]}",
        "amount": 1999,
        "currency": "usd",
        "status": draw(st.sampled_from(["succeeded", "processing", "requires_payment_method"])),
        "metadata": {},
    }
    for key in draw(
        st.sets(
            st.sampled_from(
                [
                    "id",
                    "amount",
                    "currency",
                    "status",
                    "metadata",
                    "last_payment_error",
                    "payment_intent",
                    "amount_refunded",
                ]
            ),
            max_size=3,
        )
    ):
        sane[key] = draw(hostile)
    return sane


def nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


@st.composite
def hostile_events(draw: st.DrawFn) -> bytes:
    document: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": draw(st.sampled_from(EVENT_TYPES)),
        "created": int(time.time()),
        "data": {"object": draw(provider_objects())},
    }
    for key in draw(st.sets(st.sampled_from(["id", "type", "created", "data"]), max_size=2)):
        document[key] = draw(hostile)
    levels = draw(st.one_of(st.just(0), st.integers(0, 1200)))
    if levels:
        document["nested"] = nest(1, levels)
    # NaN and Infinity are written as such (Python's json allows them).
    return json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    hostile_events(),
    hostile_events(),
    hostile_events(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
async def gateway(stack: Stack) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = GatewaySettings(
        listen="127.0.0.1:0",
        payment_svc_target=stack.grpc_target,
        secrets=(SECRET,),
        forward_timeout=5.0,
    )
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(init_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def assert_alive(stack: Stack, channel: grpc.aio.Channel) -> None:
    assert stack.processes["payment-svc"].running
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="payments.v1.ProviderSyncService"), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@fuzz(300)
@given(body=bodies, signed=st.booleans())
async def test_the_gateway_acknowledges_every_signed_event_and_never_answers_5xx(
    stack: Stack, gateway: TestClient[web.Request, web.Application], body: bytes, signed: bool
) -> None:
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["Stripe-Signature"] = sign(body, SECRET, int(time.time()))
    async with gateway.post("/webhooks/stripe", data=body, headers=headers) as response:
        status = response.status
        answer = await response.json()
    if signed and len(body) <= 65536:
        # Recorded, or quarantined: either way the provider must stop retrying.
        assert status == 200, (status, answer, body[:200])
        assert answer["received"] is True
    else:
        assert 400 <= status < 500, (status, answer)
    assert stack.processes["payment-svc"].running


# -- every RPC, every token -------------------------------------------------------

TOKENS = {
    "merchant": auth("merchant"),
    "gateway": auth("gateway"),
    "reconciler": auth("reconciler"),
    "dispatcher": auth("dispatcher"),
    "none": (),
    "wrong": (("authorization", "Bearer not-a-token"),),
    "not bearer": (("authorization", DEV_TOKENS["reconciler"]),),
}
NEVER = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Shapes that reach deeper than a random string: ids of ours, forged tokens.
PLAUSIBLE = [
    "pay_" + "0" * 32,
    "pay_" + uuid.uuid4().hex,
    str(uuid.uuid4()),
    "pi_fuzz",
    "eyJ0IjogMX0",
    "eyJ0IjogMX0.AAAAAAAAAAAAAAAAAAAAAA",
    "pm_card_visa",
    "USD",
    "sweep",
]
# Protobuf refuses strings that are not UTF-8 (no lone surrogates) on the client.
proto_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from([t for t in HOSTILE_TEXT if "\ud800" not in t and "\udfff" not in t]),
    st.sampled_from(PLAUSIBLE),
)


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[kind]
    edges = [v for v in HOSTILE_INTS if low <= v <= high] + [low, high]
    return st.one_of(st.integers(low, high), st.sampled_from(edges))


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return proto_text
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=100), hostile_events())
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _ints(field.type)


def _time_like(cls: type[Message]) -> st.SearchStrategy[Message]:
    seconds = _ints(FieldDescriptor.TYPE_INT64)
    nanos = st.one_of(st.integers(0, 999_999_999), _ints(FieldDescriptor.TYPE_INT32))
    sane = st.integers(0, 4_000_000_000)
    return st.builds(cls, seconds=st.one_of(seconds, sane), nanos=nanos)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _time_like(Timestamp)
    if descriptor.full_name == "google.protobuf.Duration":
        return _time_like(Duration)
    if depth > 2:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            optional[field.name] = st.dictionaries(
                _scalar(key, depth), _scalar(value, depth), max_size=4
            )
        elif field.is_repeated:
            optional[field.name] = st.lists(_scalar(field, depth), max_size=4)
        else:
            optional[field.name] = _scalar(field, depth)
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: cls(**kw))


def _methods(service: Any) -> list[MethodDescriptor]:
    return list(service.methods)


PAYMENT_SERVICE = svc.DESCRIPTOR.services_by_name["PaymentService"]
PROVIDER_SYNC_SERVICE = sync.DESCRIPTOR.services_by_name["ProviderSyncService"]
WEBHOOK_DISPATCH_SERVICE = dispatch.DESCRIPTOR.services_by_name["WebhookDispatchService"]


# The fuzz's own payment: valid requests about it reach the database, and the
# fuzzed fields replace one or two of theirs.
OURS: dict[str, str] = {"payment_id": "pay_" + "0" * 32}


def _now() -> Timestamp:
    return Timestamp(seconds=int(time.time()))


TEMPLATES: dict[str, Any] = {
    "CreatePayment": lambda: create_request(metadata={"order": "1"}),
    "GetPayment": lambda: svc.GetPaymentRequest(payment_id=OURS["payment_id"]),
    "ListPayments": lambda: svc.ListPaymentsRequest(page_size=5),
    "ListPaymentEvents": lambda: svc.ListPaymentEventsRequest(payment_id=OURS["payment_id"]),
    "RefundPayment": lambda: svc.RefundPaymentRequest(
        payment_id=OURS["payment_id"], idempotency_key=f"fuzz-{uuid.uuid4()}", amount=1
    ),
    "ListRefunds": lambda: svc.ListRefundsRequest(payment_id=OURS["payment_id"]),
    "ApplyProviderEvent": lambda: sync.ApplyProviderEventRequest(
        payload=json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": "pi_fuzz",
                        "amount": 1999,
                        "currency": "usd",
                        "status": "succeeded",
                        "metadata": {"payment_id": OURS["payment_id"]},
                    }
                },
            }
        ).encode()
    ),
    "ReconcilePayment": lambda: sync.ReconcilePaymentRequest(
        payment_id=OURS["payment_id"],
        snapshot=sync.ProviderPaymentSnapshot(
            found=True, provider_status="succeeded", amount=1999, currency="USD"
        ),
    ),
    "ReportDiscrepancy": lambda: sync.ReportDiscrepancyRequest(
        kind=sync.DISCREPANCY_KIND_STUCK_PAYMENT, payment_id=OURS["payment_id"]
    ),
    "ListPaymentsToReconcile": lambda: sync.ListPaymentsToReconcileRequest(
        older_than=Duration(seconds=60), reconciler_id="fuzz", lease=Duration(seconds=1)
    ),
    "RedrivePayment": lambda: sync.RedrivePaymentRequest(payment_id=OURS["payment_id"]),
    "ListDiscrepancies": lambda: sync.ListDiscrepanciesRequest(page_size=5),
    "ResolveDiscrepancy": lambda: sync.ResolveDiscrepancyRequest(
        discrepancy_id=str(uuid.uuid4()), note="fuzz"
    ),
    "RecordReconciliationRun": lambda: sync.RecordReconciliationRunRequest(
        run=sync.ReconciliationRun(job="fuzz", started_at=_now(), finished_at=_now())
    ),
    "GetCheckpoint": lambda: sync.GetCheckpointRequest(name="fuzz"),
    "SaveCheckpoint": lambda: sync.SaveCheckpointRequest(name="fuzz", value="v"),
    "LookupPayments": lambda: sync.LookupPaymentsRequest(payment_ids=[OURS["payment_id"]]),
    "ListPaymentsCreated": lambda: sync.ListPaymentsCreatedRequest(
        created_after=Timestamp(seconds=int(time.time()) - 3600), page_size=5
    ),
    "ListQuarantinedEvents": lambda: sync.ListQuarantinedEventsRequest(page_size=5),
    "ReplayQuarantinedEvent": lambda: sync.ReplayQuarantinedEventRequest(
        quarantine_id=str(uuid.uuid4())
    ),
}


@st.composite
def calls(
    draw: st.DrawFn, service: Any, owner: str
) -> tuple[MethodDescriptor, str, Message | bytes]:
    """A method, a token (its callers' most often), and a request: either
    fuzzed whole, or a valid one with one or two fields fuzzed."""
    method = draw(st.sampled_from(_methods(service)))
    token = draw(st.sampled_from([owner] * 4 + list(TOKENS)))
    hostile = draw(messages(method.input_type))
    if draw(st.integers(0, 9)) == 0:
        # Bytes protobuf may not parse: random, or a real request cut short.
        cut = draw(st.integers(0, 64))
        return method, token, draw(st.binary(max_size=64)) or hostile.SerializeToString()[:cut]
    template = TEMPLATES.get(method.name)
    if template is None or (draw(st.booleans()) and draw(st.booleans())):
        return method, token, hostile
    request: Message = template()
    names = [field.name for field, _ in hostile.ListFields()]
    chosen = draw(st.sets(st.sampled_from(names), min_size=1, max_size=2)) if names else set()
    for field in request.DESCRIPTOR.fields:
        if field.name in chosen:
            request.ClearField(field.name)
        else:
            hostile.ClearField(field.name)
    request.MergeFrom(hostile)
    return method, token, request


@pytest.fixture(scope="module")
async def our_payment(channel: grpc.aio.Channel) -> str:
    reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    OURS["payment_id"] = reply.payment.id
    return reply.payment.id


async def call(
    channel: grpc.aio.Channel,
    service: Any,
    method: MethodDescriptor,
    token: str,
    request: Message | bytes,
) -> grpc.StatusCode:
    path = f"/{service.full_name}/{method.name}"
    serialize = lambda m: m if isinstance(m, bytes) else m.SerializeToString()  # noqa: E731
    deserialize = message_factory.GetMessageClass(method.output_type).FromString
    code, details = grpc.StatusCode.OK, ""
    if method.server_streaming:
        # A stream that opened is read for a moment (it never ends by itself:
        # the change feed); a refused one fails at once.
        stream = channel.unary_stream(
            path, request_serializer=serialize, response_deserializer=deserialize
        )(request, metadata=TOKENS[token], timeout=10)
        try:
            async with asyncio.timeout(0.5):
                async for _ in stream:
                    break
        except TimeoutError:
            pass
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        finally:
            stream.cancel()
        assert code not in NEVER, (method.name, token, code, details)
        return code
    rpc = channel.unary_unary(path, request_serializer=serialize, response_deserializer=deserialize)
    try:
        await rpc(request, metadata=TOKENS[token], timeout=10)
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details() or ""
    assert code not in NEVER, (method.name, token, code, details)
    assert "Traceback" not in details
    return code


@fuzz(400)
@given(drawn=calls(PAYMENT_SERVICE, "merchant"))
async def test_every_payment_service_rpc_with_every_token_never_fails_unknown_or_internal(
    stack: Stack,
    channel: grpc.aio.Channel,
    our_payment: str,
    drawn: tuple[MethodDescriptor, str, Message | bytes],
) -> None:
    method, token, request = drawn
    await call(channel, PAYMENT_SERVICE, method, token, request)
    assert stack.processes["payment-svc"].running


@fuzz(700)
@given(drawn=calls(PROVIDER_SYNC_SERVICE, "reconciler"))
async def test_every_provider_sync_rpc_with_every_token_never_fails_unknown_or_internal(
    stack: Stack,
    channel: grpc.aio.Channel,
    our_payment: str,
    drawn: tuple[MethodDescriptor, str, Message | bytes],
) -> None:
    method, token, request = drawn
    await call(channel, PROVIDER_SYNC_SERVICE, method, token, request)
    assert stack.processes["payment-svc"].running


async def test_every_rpc_is_reached_by_the_fuzzing_and_payment_svc_lives(
    stack: Stack, channel: grpc.aio.Channel
) -> None:
    # Each method at least once with its own caller's token and an empty
    # request (the fuzzing above samples; this guarantees coverage).
    owners = {
        PAYMENT_SERVICE: "merchant",
        PROVIDER_SYNC_SERVICE: "reconciler",
        WEBHOOK_DISPATCH_SERVICE: "dispatcher",
    }
    for service, token in owners.items():
        for method in _methods(service):
            empty = message_factory.GetMessageClass(method.input_type)()
            await call(channel, service, method, token, empty)
    payment = (
        await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=5)
    ).payment
    assert payment.id
    await assert_alive(stack, channel)


@pytest.fixture(scope="module")
async def forget_fuzzed_dispatchers(db: asyncpg.Pool) -> AsyncIterator[None]:
    """The fuzz's lease calls, with made-up dispatcher ids and leases of up
    to an hour, leave phantom replicas behind (each would count in every
    real replica's share) and leases on the endpoints of the moment: gone
    after the module, as they would be an hour later."""
    yield
    await db.execute("DELETE FROM webhook_dispatchers")
    await db.execute(
        "UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL"
        " WHERE lease_owner IS NOT NULL"
    )


@hypothesis_settings(FUZZ, max_examples=300)
@given(drawn=calls(WEBHOOK_DISPATCH_SERVICE, "dispatcher"))
async def test_every_webhook_dispatch_rpc_with_every_token_never_fails_unknown_or_internal(
    stack: Stack,
    channel: grpc.aio.Channel,
    forget_fuzzed_dispatchers: None,
    drawn: tuple[MethodDescriptor, str, Message | bytes],
) -> None:
    method, token, request = drawn
    await call(channel, WEBHOOK_DISPATCH_SERVICE, method, token, request)
    assert stack.processes["payment-svc"].running


# Hostile webhook endpoint registrations (SPEC §3d): addresses the platform
# must never post to, in every spelling, and URLs of every wrong shape. Only
# IP literals and names that never reach DNS: nothing is resolved remotely.
_FORBIDDEN_HOSTS = [
    "10.0.0.1",
    "10.255.255.255",
    "172.16.5.4",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.251",
    "255.255.255.255",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12::1]",
    "[ff02::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::]",
    "[::ffff:169.254.169.254]",
    "[::ffff:a00:1]",
    "[::]",
]


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 4))
    path = draw(st.text(alphabet="abc/%?=&#.", max_size=20))
    port = draw(st.sampled_from(["", ":443", ":8443", ":0", ":99999", ":-1"]))
    if kind == 0:  # a forbidden address, https
        return f"https://{draw(st.sampled_from(_FORBIDDEN_HOSTS))}{port}/{path}"
    if kind == 1:  # http off loopback
        return f"http://93.184.216.34{port}/{path}"
    if kind == 2:  # another scheme, or none
        scheme = draw(st.sampled_from(["ftp", "file", "gopher", "javascript", "data", ""]))
        return f"{scheme}://127.0.0.1/{path}"
    if kind == 3:  # credentials, spaces, control characters, non-ASCII, too long
        return draw(
            st.sampled_from(
                [
                    "https://user:pw@127.0.0.1/x",
                    "https://127.0.0.1 /x",
                    "https://127.0.0.1/\r\nX: y",
                    "https://bücher.example/",
                    "https://127.0.0.1/" + "a" * 2100,
                    "https://",
                    "",
                ]
            )
        )
    return draw(st.text(max_size=60))


@hypothesis_settings(FUZZ, max_examples=200)
@given(url=hostile_urls(), description=st.text(max_size=40))
async def test_hostile_endpoint_registrations_are_refused_with_a_reason(
    stack: Stack, channel: grpc.aio.Channel, url: str, description: str
) -> None:
    try:
        created = await stub(channel).CreateWebhookEndpoint(
            wh.CreateWebhookEndpointRequest(url=url, description=description),
            metadata=auth("merchant-2"),
            timeout=10,
        )
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details() or ""
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (url, details)
        assert "Traceback" not in details
        return
    # Random text can, rarely, be a loopback URL development allows: never
    # anything else.
    await stub(channel).DeleteWebhookEndpoint(
        wh.DeleteWebhookEndpointRequest(endpoint_id=created.endpoint.id),
        metadata=auth("merchant-2"),
        timeout=10,
    )
    assert created.endpoint.url.startswith(("http://127.", "https://127.", "http://localhost"))
