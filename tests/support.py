"""What tests share: auth metadata, rich-error parsing, the simulator's control
API, deadlines checked with slack, and polling for a state."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments_dev.devdb import LocalPostgres
from payments_dev.stack import DEV_TOKENS

# Where the contract is a deadline ("answers within DB_TIMEOUT_SECONDS"), the
# test asserts it with slack for a machine twice as slow as a quiet one: the
# promised timer runs at its own speed, the work around it (a round trip, a
# process's reaction) may take twice as long.
SLOW_MACHINE = 2.0


def promised(timer: float, work: float) -> float:
    """The bound of an outcome promised within `timer` seconds of a timer of
    the code's plus `work` seconds of work on a quiet machine."""
    return timer + SLOW_MACHINE * work


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30, every: float = 0.05
) -> None:
    """Polls for a state instead of sleeping for it. The timeout only ends a
    wait that would never end: it is not part of what the test checks."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await condition():
                    return
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"never: {what} (waited {timeout} s)") from None


def auth(who: str = "merchant") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {DEV_TOKENS[who]}"),)


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def create_request(**overrides: Any) -> svc.CreatePaymentRequest:
    fields: dict[str, Any] = {
        "idempotency_key": new_key(),
        "amount": 1999,
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "description": "test order",
    }
    fields.update(overrides)
    return svc.CreatePaymentRequest(**fields)


def stub(channel: grpc.aio.Channel) -> svc_grpc.PaymentServiceStub:
    return svc_grpc.PaymentServiceStub(channel)


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    violations: dict[str, str]


def rich_error(err: grpc.aio.AioRpcError) -> RichError:
    reason, metadata, violations = "", {}, {}
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = {v.field: v.description for v in bad.field_violations}
    return RichError(err.code(), err.details() or "", reason, metadata, violations)


class SimControl:
    """The provider simulator's /_sim/ control API."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def faults(self, **values: Any) -> dict[str, Any]:
        async with self.http.post("/_sim/faults", json=values) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def clear_faults(self) -> None:
        await self.faults(
            latency_ms=0,
            error_rate=0,
            timeout_after_charge_rate=0,
            webhook_drop_rate=0,
            webhook_duplicate_rate=0,
            webhook_reorder=False,
            webhook_delay_ms=0,
            refund_pending_rate=0,
            refund_fail_after_ms=3000,  # provider-sim's default
            unavailable_routes=[],
        )

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.http.post(path, json=body or {}) as r:
            assert r.status == 200, await r.text()
            reply: dict[str, Any] = await r.json()
            return reply

    async def settle(self, intent_id: str, outcome: str) -> dict[str, Any]:
        return await self.post(f"/_sim/payment_intents/{intent_id}/settle", {"outcome": outcome})

    async def webhooks(self, **config: Any) -> dict[str, Any]:
        return await self.post("/_sim/webhooks", config)

    async def events(self, **query: str) -> list[dict[str, Any]]:
        async with self.http.get("/_sim/events", params=query) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
            rows: list[dict[str, Any]] = body["events"] if isinstance(body, dict) else body
            return rows

    async def ledger(self, **query: str) -> list[dict[str, Any]]:
        async with self.http.get("/_sim/ledger", params=query) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
            intents: list[dict[str, Any]] = body["payment_intents"]
            return intents


def embedded_postgres() -> LocalPostgres:
    """A new embedded cluster in its own directory. Not under pytest's
    tmp_path: that tree is 0700 and rotated by other pytest runs, and the
    cluster runs as another user when we are root."""
    return LocalPostgres(Path(tempfile.mkdtemp(prefix="payments-pg-")) / "data")
