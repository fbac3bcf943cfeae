"""What wraps every unary call, outermost first:

    observed       go-grpc-prometheus counters and latency, every code
                   (cancelled and deadline-exceeded calls included)
    handled        request id and log context, the server-side deadline cap,
                   domain errors -> rich gRPC statuses
    authenticated  bearer token -> Principal, per-service permissions

One interceptor composes them once per method and keeps the result: grpc.aio
asks interceptors for a handler on every call, and building wrappers (and
looking up metric children) per call is pure overhead on the hot path.
Health and reflection need no token (Kubernetes probes have none).
"""

from __future__ import annotations

import asyncio
import contextvars
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
ALLOWED_ROLES: Mapping[str, frozenset[Role]] = {
    "payments.v1.PaymentService": frozenset({Role.MERCHANT}),
    "payments.v1.ProviderSyncService": frozenset({Role.GATEWAY, Role.RECONCILER}),
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
    def __init__(self, principals: Mapping[str, Principal], max_call_seconds: float) -> None:
        self._principals = dict(principals)
        self._cap = max_call_seconds
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(details)
        if handler is not None and handler.unary_unary is not None:
            service, name = split_method(method)
            behavior = cast(Behavior, handler.unary_unary)
            if service not in PUBLIC_SERVICES:
                behavior = authenticated(
                    behavior, self._principals, ALLOWED_ROLES.get(service, frozenset()), service
                )
            behavior = observed(handled(behavior, self._cap, method), ("unary", service, name))
            handler = grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Streaming handlers (health Watch, reflection) pass through untouched.
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


def authenticated(
    behavior: Behavior,
    principals: Mapping[str, Principal],
    allowed: frozenset[Role],
    service: str,
) -> Behavior:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        header = _metadata(context, "authorization") or ""
        scheme, _, token = header.partition(" ")
        principal = principals.get(token) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Unauthenticated("missing or unknown bearer token")
        if principal.role not in allowed:
            raise PermissionDenied(f"{principal.role.value} may not call {service}")
        PRINCIPAL.set(principal)
        return await behavior(request, context)

    return call
