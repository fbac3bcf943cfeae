"""What wraps every unary call, outermost first:

    observed       go-grpc-prometheus counters and latency, every code
                   (cancelled and deadline-exceeded calls included)
    handled        request id and log context, the server-side deadline cap,
                   domain errors -> rich gRPC statuses
    authenticated  bearer token -> Principal, then METHOD_ROLES: who may
                   call which method

One interceptor composes them once per method and keeps the result: grpc.aio
asks interceptors for a handler on every call, and building wrappers (and
looking up metric children) per call is pure overhead on the hot path.
Health and reflection need no token (Kubernetes probes have none). Every
other method, unary or streaming, is authorized here and only here, by one
default-deny table: a method without an entry is refused to every caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias, cast

import grpc
import structlog

from payment_svc.domain.errors import PaymentsError, PermissionDenied, Unauthenticated
from payment_svc.entrypoints import metrics
from payment_svc.entrypoints.errors import to_grpc_status, unexpected
from payment_svc.settings import Principal, Role

log = structlog.get_logger("payment_svc.grpc")

Behavior: TypeAlias = "Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]"
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"
)

PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
_PAYMENTS = "/payments.v1.PaymentService/"
_SYNC = "/payments.v1.ProviderSyncService/"
_DISPATCH = "/payments.v1.WebhookDispatchService/"
_MERCHANT = frozenset({Role.MERCHANT})
_RECONCILER = frozenset({Role.RECONCILER})

# Who may call what: the one authorization table, default deny. A method that
# is not here is refused (PERMISSION_DENIED) to every caller, so a new method
# is closed until someone decides who may call it.
METHOD_ROLES: Mapping[str, frozenset[Role]] = {
    _PAYMENTS + "CreatePayment": _MERCHANT,
    _PAYMENTS + "GetPayment": _MERCHANT,
    _PAYMENTS + "ListPayments": _MERCHANT,
    _PAYMENTS + "ListPaymentEvents": _MERCHANT,
    _PAYMENTS + "RefundPayment": _MERCHANT,
    _PAYMENTS + "ListRefunds": _MERCHANT,
    _PAYMENTS + "ListPaymentUpdates": _MERCHANT,
    _PAYMENTS + "WatchPaymentUpdates": _MERCHANT,
    # Signed webhooks (SPEC §3d): a client manages its own endpoints.
    _PAYMENTS + "CreateWebhookEndpoint": _MERCHANT,
    _PAYMENTS + "ListWebhookEndpoints": _MERCHANT,
    _PAYMENTS + "UpdateWebhookEndpoint": _MERCHANT,
    _PAYMENTS + "DeleteWebhookEndpoint": _MERCHANT,
    _PAYMENTS + "RotateWebhookSecret": _MERCHANT,
    _PAYMENTS + "ListWebhookDeliveries": _MERCHANT,
    _PAYMENTS + "RedeliverWebhooks": _MERCHANT,
    # The gateway forwards webhooks; the reconciler's catch-up replays events.
    _SYNC + "ApplyProviderEvent": frozenset({Role.GATEWAY, Role.RECONCILER}),
    _SYNC + "ReconcilePayment": _RECONCILER,
    _SYNC + "ReportDiscrepancy": _RECONCILER,
    _SYNC + "ListPaymentsToReconcile": _RECONCILER,
    _SYNC + "RedrivePayment": _RECONCILER,
    _SYNC + "ListRefundsToReconcile": _RECONCILER,
    _SYNC + "ReconcileRefund": _RECONCILER,
    _SYNC + "RedriveRefund": _RECONCILER,
    _SYNC + "LookupRefunds": _RECONCILER,
    _SYNC + "ListDiscrepancies": _RECONCILER,
    _SYNC + "ResolveDiscrepancy": _RECONCILER,
    # an operator's, with the reconciler's token (as `payments discrepancies`)
    _SYNC + "CorrectPayment": _RECONCILER,
    _SYNC + "RecordReconciliationRun": _RECONCILER,
    _SYNC + "GetCheckpoint": _RECONCILER,
    _SYNC + "SaveCheckpoint": _RECONCILER,
    _SYNC + "LookupPayments": _RECONCILER,
    _SYNC + "ListPaymentsCreated": _RECONCILER,
    _SYNC + "GetReconciliationStatus": _RECONCILER,
    # Operators (with the reconciler's token) list and replay poison events.
    _SYNC + "ListQuarantinedEvents": _RECONCILER,
    _SYNC + "ReplayQuarantinedEvent": _RECONCILER,
    # webhook-dispatcher: leases, the queue, the attempts' outcomes.
    _DISPATCH + "LeaseWebhookEndpoints": frozenset({Role.DISPATCHER}),
    _DISPATCH + "FetchWebhookMessages": frozenset({Role.DISPATCHER}),
    _DISPATCH + "RecordWebhookAttempt": frozenset({Role.DISPATCHER}),
}


def split_method(full: str) -> tuple[str, str]:
    _, service, method = full.split("/", 2)
    return service, method


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


class CallPipeline(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        principals: Mapping[str, Principal],
        max_call_seconds: float,
        method_roles: Mapping[str, frozenset[Role]] = METHOD_ROLES,
    ) -> None:
        self._principals = dict(principals)
        self._cap = max_call_seconds
        self._roles = dict(method_roles)
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(details)
        if handler is not None:
            service, name = split_method(method)
            public = service in PUBLIC_SERVICES
            allowed = self._roles.get(method, frozenset())
            if handler.unary_unary is not None:
                behavior = cast(Behavior, handler.unary_unary)
                if not public:
                    behavior = authenticated(behavior, self._principals, allowed, method)
                behavior = observed(handled(behavior, self._cap, method), ("unary", service, name))
                handler = grpc.unary_unary_rpc_method_handler(
                    behavior,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            elif not public:
                handler = _guarded_stream(handler, self._principals, allowed, method)
            # Public streaming handlers (health Watch, reflection) pass untouched.
        self._handlers[method] = handler
        return handler


def observed(behavior: Behavior, labels: tuple[str, str, str]) -> Behavior:
    started = metrics.GRPC_STARTED.labels(*labels)
    received = metrics.GRPC_MSG_RECEIVED.labels(*labels)
    sent = metrics.GRPC_MSG_SENT.labels(*labels)
    seconds = metrics.GRPC_HANDLING_SECONDS.labels(*labels)
    handled_by_code = {
        code: metrics.GRPC_HANDLED.labels(*labels, code.name) for code in grpc.StatusCode
    }

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started.inc()
        received.inc()
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            response = await behavior(request, context)
            code = context.code() or grpc.StatusCode.OK
            if code == grpc.StatusCode.OK:
                sent.inc()
            return response
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            remaining = context.time_remaining()
            code = (
                grpc.StatusCode.DEADLINE_EXCEEDED
                if remaining is not None and remaining <= 0
                else grpc.StatusCode.CANCELLED
            )
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            seconds.observe(time.perf_counter() - t0)
            counter = handled_by_code.get(code) if isinstance(code, grpc.StatusCode) else None
            (counter or metrics.GRPC_HANDLED.labels(*labels, str(code))).inc()

    return call


def call_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The caller's deadline on the running loop's clock; None when the call
    carries none (the server-side cap bounds it then)."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


def handled(behavior: Behavior, cap: float, method: str) -> Behavior:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request_id = _metadata(context, "x-request-id") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=method)
        context.set_trailing_metadata((("x-request-id", request_id),))
        try:
            if context.time_remaining() is None:
                # No deadline from the caller: ours applies.
                async with asyncio.timeout(cap):
                    return await behavior(request, context)
            return await behavior(request, context)
        except PaymentsError as exc:
            if exc.retryable:
                log.warning("call_failed", reason=exc.reason, error=str(exc))
            await context.abort_with_status(to_grpc_status(exc))
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "server-side time limit")
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the last line: a bug, never a traceback to the caller
            await context.abort(grpc.StatusCode.INTERNAL, unexpected(exc, request_id, method))
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "rpc", "payment_id")

    return call


def authorize(
    context: grpc.aio.ServicerContext[Any, Any],
    principals: Mapping[str, Principal],
    allowed: frozenset[Role],
    method: str,
) -> Principal:
    """The one check: who calls (the bearer token), and whether METHOD_ROLES
    lets that role call this method."""
    header = _metadata(context, "authorization") or ""
    scheme, _, token = header.partition(" ")
    principal = principals.get(token) if scheme.lower() == "bearer" else None
    if principal is None:
        raise Unauthenticated("missing or unknown bearer token")
    if principal.role not in allowed:
        raise PermissionDenied(f"{principal.role.value} may not call {method}")
    PRINCIPAL.set(principal)
    return principal


def authenticated(
    behavior: Behavior,
    principals: Mapping[str, Principal],
    allowed: frozenset[Role],
    method: str,
) -> Behavior:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        authorize(context, principals, allowed, method)
        return await behavior(request, context)

    return call


def _guarded_stream(
    handler: grpc.RpcMethodHandler[Any, Any],
    principals: Mapping[str, Principal],
    allowed: frozenset[Role],
    method: str,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming method behind the same check, with the unary calls'
    error mapping: a domain error raised while streaming ends the stream
    with its rich status, anything else with INTERNAL."""

    async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            authorize(context, principals, allowed, method)
        except PaymentsError as exc:
            await context.abort_with_status(to_grpc_status(exc))

    def guard(inner: Any) -> Any:
        if inspect.isasyncgenfunction(inner):

            async def generate(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(context)
                request_id = _metadata(context, "x-request-id") or uuid.uuid4().hex
                structlog.contextvars.bind_contextvars(request_id=request_id, rpc=method)
                try:
                    async for message in inner(request, context):
                        yield message
                except PaymentsError as exc:
                    await context.abort_with_status(to_grpc_status(exc))
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # a bug: never a traceback to the caller
                    await context.abort(
                        grpc.StatusCode.INTERNAL, unexpected(exc, request_id, method)
                    )

            return generate

        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check(context)
            return await inner(request, context)

        return run

    make = {
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    for kind, factory in make.items():
        inner = getattr(handler, kind)
        if inner is not None:
            built: grpc.RpcMethodHandler[Any, Any] = factory(
                guard(inner),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            return built
    return handler
