"""Every input rule of SPEC §3 over a real channel, and no card data anywhere."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.v1 import payment_service_pb2 as svc
from payments_dev.stack import Stack
from tests.support import auth, create_request, rich_error, stub

RULES = [
    ({"amount": 0}, "amount"),
    ({"amount": 100_000_000}, "amount"),
    ({"currency": "usd"}, "currency"),
    ({"currency": "ABC"}, "currency"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ({"idempotency_key": "bell\x07"}, "idempotency_key"),
    ({"payment_method": "visa"}, "payment_method"),
    ({"description": "d" * 1001}, "description"),
    ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
    ({"metadata": {"k" * 41: "v"}}, "metadata"),
    ({"metadata": {"note": "v" * 501}}, "metadata[note]"),
]


@pytest.mark.parametrize(("overrides", "field"), RULES)
async def test_each_rule_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(create_request(**overrides), metadata=auth(), timeout=5)
    err = rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.violations
    assert err.reason == "INVALID_ARGUMENT"


async def test_all_violations_are_reported_at_once(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(
            create_request(amount=0, currency="??", payment_method=""), metadata=auth(), timeout=5
        )
    assert {"amount", "currency", "payment_method"} <= rich_error(exc.value).violations.keys()


async def test_the_floors_violations_and_the_rules_come_in_one_answer(
    channel: grpc.aio.Channel,
) -> None:
    """A NUL in `description` (the floor, before any use case) and a negative
    amount beside it (the command's rule): both named at once (issue 22)."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).CreatePayment(
            create_request(description="a\x00b", amount=-5), metadata=auth(), timeout=5
        )
    err = rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"description", "amount"} <= err.violations.keys()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub(channel).RefundPayment(
            svc.RefundPaymentRequest(
                payment_id="pay_\x00", idempotency_key="", amount=-1, reason="nope"
            ),
            metadata=auth(),
            timeout=5,
        )
    assert {"payment_id", "idempotency_key", "amount"} <= rich_error(exc.value).violations.keys()


PAN = "4242424242424242"
SPACED_PAN = "4000 0566 5566 5556"


async def test_card_numbers_are_refused_and_stored_or_logged_nowhere(
    channel: grpc.aio.Channel, db: asyncpg.Pool, stack: Stack
) -> None:
    attempts = [
        create_request(payment_method=f"pm_{PAN}"),
        create_request(payment_method=PAN),
        create_request(metadata={"card": SPACED_PAN}),
        create_request(metadata={"note": f"paid with {PAN}"}),
        create_request(description=f"card {SPACED_PAN}"),
        create_request(idempotency_key=f"order-{PAN}"),
    ]
    for req in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub(channel).CreatePayment(req, metadata=auth(), timeout=5)
        err = rich_error(exc.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert PAN not in str(err) and "5556" not in str(err)

    digits = {PAN, SPACED_PAN.replace(" ", "")}
    for table in ("payments", "payment_events"):
        dump = await db.fetchval(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t")
        squeezed = dump.replace(" ", "").replace("-", "")
        assert not any(d in squeezed for d in digits), table
    assert stack.config.log_dir is not None
    for log in Path(stack.config.log_dir).glob("*.log"):
        text = log.read_text().replace(" ", "").replace("-", "")
        assert not any(d in text for d in digits), log.name
