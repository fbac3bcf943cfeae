"""PCI: no card number at rest, in a log or in an answer, whatever comes in.

A stack of its own (real processes, a database of its own) is fed the card
networks' test numbers, in every digit form, alone and in text, in every
field of every entry point: the merchant API, every ProviderSyncService
method with the gateway's and the reconciler's tokens, and validly signed
webhooks through the gateway carrying them in every string and number field
(ids, type, object id, metadata, the provider's failure code and message).
Then a `pg_dump` of the database, the log of every process and every answer
are scanned: not one test card number, in any digit form.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from payment_svc.adapters.migrate import migrate
from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.stack import DEV_TOKENS, Stack, wait_serving
from provider_sim.signature import signature_header
from tests.conftest import stack_config
from tests.pci_cards import TEST_CARDS, find_cards, hostile_values
from webhook_gateway.settings import DEV_SECRET

VALUES = hostile_values()
# gRPC metadata and HTTP headers are ASCII.
ASCII_VALUES = [v for v in VALUES if v.isascii()]
CONCURRENCY = 16
REDACTED = "[REDACTED-PAN]"


def _meta(who: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    metadata = [("authorization", f"Bearer {DEV_TOKENS[who]}")]
    if request_id is not None:
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


def _pg_dump_binaries() -> Iterator[str]:
    try:
        import pgserver  # the embedded Postgres's own tools (dev only)

        yield str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump")
    except ImportError:
        pass
    yield from sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)
    found = shutil.which("pg_dump")
    if found:
        yield found


def pg_dump(dsn: str, server_major: int) -> str:
    """The database as SQL, by a pg_dump at least as new as the server
    (the system's or the embedded Postgres's bundled one)."""
    tried = []
    for binary in _pg_dump_binaries():
        if not os.access(binary, os.X_OK):
            continue
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        major = re.search(r"(\d+)(?:\.\d+)?", version)
        tried.append(f"{binary}: {version.strip()}")
        if major is None or int(major.group(1)) < server_major:
            continue
        done = subprocess.run(
            [binary, "--no-owner", "--dbname", dsn], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()
    pytest.fail(f"no pg_dump for Postgres {server_major}: {tried}")


class Echoes:
    """Everything the stack answered: error details and HTTP bodies."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.codes: dict[str, int] = {}

    def grpc_error(self, method: str, error: grpc.aio.AioRpcError) -> None:
        self.texts.append(error.details() or "")
        key = f"{method}:{error.code().name}"
        self.codes[key] = self.codes.get(key, 0) + 1

    async def call(self, method: str, call: Awaitable[Any]) -> Any:
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            self.grpc_error(method, error)
            return None
        self.texts.append(str(reply))
        return reply


async def _bounded(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(make: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await make()

    await asyncio.gather(*(one(c) for c in calls))


def _event(
    type_: str = "payment_intent.succeeded", obj: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj or {"id": f"pi_{uuid.uuid4().hex[:24]}", "metadata": {}}},
    }
    document.update(top)
    return document


def _card_int(value: str) -> int | None:
    return int(value) if value.isdigit() and value.isascii() else None


def hostile_events(payment_id: str, intent_id: str, value: str, n: int) -> list[dict[str, Any]]:
    """Events carrying `value` in every string field and, as a number, in
    every number field; the first one fails our pending payment with it."""
    number = _card_int(TEST_CARDS[n % len(TEST_CARDS)])
    failed = {
        "id": intent_id,
        "object": "payment_intent",
        "status": "requires_payment_method",
        "amount": 1999,
        "currency": "usd",
        "description": value,
        "amount_capturable": number,
        "metadata": {"payment_id": payment_id, "note": value, value: value},
        "last_payment_error": {
            "code": value,
            "decline_code": value,
            "message": f"declined: {value}",
            "param": number,
        },
        "shipping": {"phone": value, "address": {"line1": value, "postal_code": number}},
    }
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    return [
        _event("payment_intent.payment_failed", failed, request={"idempotency_key": value}),
        _event(value, {"id": pi, "metadata": {"payment_id": value}}),
        _event("payment_intent.succeeded", {"id": value, "metadata": {"payment_id": value}}),
        _event(
            "payment_intent.processing",
            {"id": pi, "amount": number, "currency": value, "metadata": {"payment_id": value}},
        ),
        _event("charge.refunded", {"id": value, "payment_intent": value, "amount_refunded": 1}),
        _event("charge.dispute.created", {"id": value, "payment_intent": pi, "amount": number}),
        _event("payment_intent.canceled", {"id": pi, "status": "canceled", value: [value, number]}),
    ]


async def test_no_card_number_is_stored_logged_or_echoed(
    pg_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = f"payments_pci_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(pg_server)._replace(path="/" + name))
    log_dir = tmp_path_factory.mktemp("pci-logs")
    stack = Stack(
        stack_config(
            dsn,
            log_dir,
            PAYMENT_SVC_UNMATCHED_EVENT_DEADLINE_SECONDS="1",
            PAYMENT_SVC_INBOX_UPKEEP_SECONDS="0.5",
        )
    )
    try:
        await migrate(dsn)
        stack.start()
        await wait_serving(stack.grpc_target)
        echoes = Echoes()
        await _feed(stack, echoes)
        stack.stop()

        server_major = int(await admin.fetchval("SHOW server_version_num")) // 10000
        dump = pg_dump(dsn, server_major)
        db = await asyncpg.connect(dsn)
        try:
            stored = await _what_was_stored(db)
        finally:
            await db.close()
    finally:
        stack.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    assert find_cards(dump) == [], "card numbers in the pg_dump"
    logs = {p.name: p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log"))}
    assert set(logs) >= {"payment-svc.log", "webhook-gateway.log", "reconciler.log"}
    for log_name, text in logs.items():
        hits = find_cards(text)
        lines = [line for line in text.splitlines() if find_cards(line)][:3]
        assert hits == [], f"card numbers in {log_name}: {lines}"
    for answer in echoes.texts:
        assert find_cards(answer) == [], f"card number echoed: {answer[:300]}"
    # Hostile input is refused or recorded; never a failure of ours (payment-svc
    # is up: a 503 would be one too).
    failures = {
        k: n for k, n in echoes.codes.items() if k.endswith((":UNKNOWN", ":INTERNAL", ":503"))
    }
    assert failures == {}
    # The hostile values were stored, redacted (the test did reach the tables).
    status, code, message = stored["failed_payment"] or ("", "", "")
    assert (status, REDACTED in code, REDACTED in message) == ("FAILED", True, True), stored
    assert stored["redacted_event_ids"] >= 1, stored
    assert stored["redacted_details"] >= 1, stored
    assert dump.count(REDACTED) > 50


async def _what_was_stored(db: asyncpg.Connection) -> dict[str, Any]:
    failed = await db.fetchrow(
        "SELECT status, failure_code, failure_message FROM payments WHERE description = 'pci'"
        " AND status = 'FAILED'"
    )
    return {
        "failed_payment": tuple(failed) if failed else None,
        "redacted_event_ids": await db.fetchval(
            "SELECT count(*) FROM provider_events WHERE provider_event_id = $1", REDACTED
        ),
        "redacted_details": await db.fetchval(
            "SELECT count(*) FROM discrepancies WHERE details::text LIKE $1", f"%{REDACTED}%"
        ),
    }


async def _feed(stack: Stack, echoes: Echoes) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        payments = svc_grpc.PaymentServiceStub(channel)
        provider_sync = sync_grpc.ProviderSyncServiceStub(channel)
        # Payments of ours for the hostile events and snapshots to reach.
        pending = await payments.CreatePayment(
            svc.CreatePaymentRequest(
                idempotency_key=uuid.uuid4().hex,
                amount=1999,
                currency="USD",
                payment_method="pm_card_processing",
                description="pci",
            ),
            metadata=_meta("merchant"),
        )
        done = await payments.CreatePayment(
            svc.CreatePaymentRequest(
                idempotency_key=str(uuid.uuid4()),
                amount=1999,
                currency="USD",
                payment_method="pm_card_visa",
                description="pci-succeeded",
            ),
            metadata=_meta("merchant"),
        )
        await _merchant_api(payments, echoes)
        await _webhooks(stack, pending.payment, echoes)
        refunded = await payments.CreatePayment(
            svc.CreatePaymentRequest(
                idempotency_key=str(uuid.uuid4()),
                amount=1999,
                currency="USD",
                payment_method="pm_card_visa",
                description="pci-refunded",
            ),
            metadata=_meta("merchant"),
        )
        await _provider_sync(provider_sync, done.payment, refunded.payment, echoes)
    # The inbox upkeep reports the unmatched hostile events (deadline 1 s,
    # every 0.5 s): until it has, redacted, what is stored is not complete.
    db = await asyncpg.connect(stack.database_url)
    try:
        async with asyncio.timeout(30):
            while True:
                if (await _what_was_stored(db))["redacted_details"]:
                    break
                await asyncio.sleep(0.1)
    finally:
        await db.close()


async def _merchant_api(payments: svc_grpc.PaymentServiceStub, echoes: Echoes) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = []

    def create(**fields: Any) -> Callable[[], Awaitable[Any]]:
        request = {
            "idempotency_key": uuid.uuid4().hex,
            "amount": 1999,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            "description": "pci",
            **fields,
        }
        return lambda: echoes.call(
            "CreatePayment",
            payments.CreatePayment(svc.CreatePaymentRequest(**request), metadata=_meta("merchant")),
        )

    for i, v in enumerate(VALUES):
        calls += [
            create(idempotency_key=v),
            create(description=v),
            create(metadata={"note": v}),
            create(metadata={v: "x"}),
            create(payment_method=v),
            create(
                idempotency_key=v,
                amount=_card_int(TEST_CARDS[i % len(TEST_CARDS)]),
                currency=v,
                description=v,
                metadata={v: v},
                payment_method=v,
            ),
            lambda v=v: echoes.call(
                "GetPayment",
                payments.GetPayment(
                    svc.GetPaymentRequest(payment_id=v), metadata=_meta("merchant")
                ),
            ),
            lambda v=v: echoes.call(
                "ListPaymentEvents",
                payments.ListPaymentEvents(
                    svc.ListPaymentEventsRequest(payment_id=v), metadata=_meta("merchant")
                ),
            ),
            lambda v=v: echoes.call(
                "ListPayments",
                payments.ListPayments(
                    svc.ListPaymentsRequest(page_token=v), metadata=_meta("merchant")
                ),
            ),
        ]
        if v.isascii():
            calls.append(create_with_request_id(payments, echoes, v, i))
    await _bounded(calls)


def create_with_request_id(
    payments: svc_grpc.PaymentServiceStub, echoes: Echoes, value: str, i: int
) -> Callable[[], Awaitable[Any]]:
    request = svc.CreatePaymentRequest(
        idempotency_key=f"pci-{i}-{uuid.uuid4().hex}",
        amount=1999,
        currency="USD",
        payment_method="pm_card_visa",
        description="pci",
    )
    return lambda: echoes.call(
        "CreatePayment", payments.CreatePayment(request, metadata=_meta("merchant", value))
    )


async def _webhooks(stack: Stack, pending: pb.Payment, echoes: Echoes) -> None:
    url = f"{stack.gateway_url}/webhooks/stripe"
    async with aiohttp.ClientSession() as http:

        async def post(body: bytes, headers: dict[str, str]) -> None:
            async with http.post(url, data=body, headers=headers) as response:
                echoes.texts.append(await response.text())
                if response.status >= 500:
                    key = f"http:{response.status}"
                    echoes.codes[key] = echoes.codes.get(key, 0) + 1

        calls: list[Callable[[], Awaitable[Any]]] = []
        for n, value in enumerate(VALUES[::3]):
            for document in hostile_events(pending.id, pending.provider_payment_id, value, n):
                body = json.dumps(document, ensure_ascii=n % 2 == 0).encode()
                headers = {
                    "Stripe-Signature": signature_header(DEV_SECRET, body, int(time.time())),
                    "Content-Type": "application/json",
                }
                if value.isascii():
                    headers["X-Request-Id"] = value
                calls.append(lambda b=body, h=headers: post(b, h))
            # Unsigned and badly signed: refused, and logged as refused.
            body = json.dumps(_event(value)).encode()
            bad = {"Stripe-Signature": f"t=1,v1={value}" if value.isascii() else "t=1"}
            calls.append(lambda b=body, h=bad: post(b, h))
        await _bounded(calls)


async def _provider_sync(
    provider_sync: sync_grpc.ProviderSyncServiceStub,
    done: pb.Payment,
    refunded: pb.Payment,
    echoes: Echoes,
) -> None:
    gateway, reconciler = _meta("gateway"), _meta("reconciler")
    calls: list[Callable[[], Awaitable[Any]]] = []

    def call(method: str, request: Any, metadata: Any = reconciler) -> None:
        rpc = getattr(provider_sync, method)
        calls.append(lambda: echoes.call(method, rpc(request, metadata=metadata)))

    now = timestamp_pb2.Timestamp(seconds=int(time.time()))
    for n, v in enumerate(VALUES):
        number = _card_int(TEST_CARDS[n % len(TEST_CARDS)]) or 0
        payload = json.dumps(
            _event(v, {"id": v, "amount": number, "metadata": {"payment_id": v, v: v}}, id=v),
            ensure_ascii=n % 2 == 1,
        ).encode()
        for who in (gateway, reconciler):
            call(
                "ApplyProviderEvent",
                sync.ApplyProviderEventRequest(
                    provider_event_id=v, event_type=v, payload=payload, provider_created_at=now
                ),
                who,
            )
        # Authoritative snapshots: a provider's failure code and message.
        call(
            "ReconcilePayment",
            sync.ReconcilePaymentRequest(
                payment_id=done.id if n % 2 else v,
                snapshot=sync.ProviderPaymentSnapshot(
                    found=True,
                    provider_payment_id=v if n % 3 else done.provider_payment_id,
                    provider_status="requires_payment_method" if n % 4 else v,
                    amount=done.amount if n % 5 else number,
                    currency="usd" if n % 6 else v,
                    failure_code=v,
                    failure_message=f"the provider says {v}",
                    observed_at=now,
                ),
            ),
        )
        # A refund the size of a card number (a number field, to a number column).
        call(
            "ReconcilePayment",
            sync.ReconcilePaymentRequest(
                payment_id=refunded.id,
                snapshot=sync.ProviderPaymentSnapshot(
                    found=True,
                    provider_payment_id=refunded.provider_payment_id,
                    provider_status="succeeded",
                    amount=refunded.amount,
                    currency="usd",
                    amount_refunded=number,
                    observed_at=now,
                ),
            ),
        )
        kind = sync.DISCREPANCY_KIND_STUCK_PAYMENT + n % 6
        call(
            "ReportDiscrepancy",
            sync.ReportDiscrepancyRequest(
                kind=kind,  # type: ignore[arg-type]
                payment_id=done.id if n % 2 else v,
                provider_payment_id=v,
                details={v: v, "note": v},
            ),
        )
        call(
            "ListPaymentsToReconcile",
            sync.ListPaymentsToReconcileRequest(
                older_than=duration_pb2.Duration(seconds=0),
                page_token=v,
                reconciler_id=v,
                lease=duration_pb2.Duration(seconds=1),
            ),
        )
        call("RedrivePayment", sync.RedrivePaymentRequest(payment_id=v))
        call(
            "LookupPayments",
            sync.LookupPaymentsRequest(payment_ids=[v], provider_payment_ids=[v]),
        )
        call("ListDiscrepancies", sync.ListDiscrepanciesRequest(page_token=v))
        call("ResolveDiscrepancy", sync.ResolveDiscrepancyRequest(discrepancy_id=v, note=v))
        run = sync.ReconciliationRun(
            job=v,
            reconciler_id=v,
            error_message=f"failed on {v}",
            succeeded=False,
            scanned=number,
            fixed=number,
            discrepancies=number,
            errors=number,
        )
        run.started_at.FromSeconds(int(time.time()) - 1)
        run.finished_at.FromSeconds(int(time.time()))
        call("RecordReconciliationRun", sync.RecordReconciliationRunRequest(run=run))
        call("GetCheckpoint", sync.GetCheckpointRequest(name=v))
        call("SaveCheckpoint", sync.SaveCheckpointRequest(name=v, value=v))
        call("ListPaymentsCreated", sync.ListPaymentsCreatedRequest(page_token=v))
    await _bounded(calls)
    # Resolving the findings just reported, with a note that is a card number.
    listed = await provider_sync.ListDiscrepancies(
        sync.ListDiscrepanciesRequest(page_size=50), metadata=reconciler
    )
    resolutions: list[Callable[[], Awaitable[Any]]] = []
    for d, v in zip(listed.discrepancies, VALUES, strict=False):
        request = sync.ResolveDiscrepancyRequest(discrepancy_id=d.id, note=v)
        resolutions.append(
            lambda r=request: echoes.call(
                "ResolveDiscrepancy", provider_sync.ResolveDiscrepancy(r, metadata=reconciler)
            )
        )
    await _bounded(resolutions)
    assert listed.discrepancies, "no discrepancy was recorded"
