"""The domain without I/O: states, transitions, input rules, card detection."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from payment_svc.domain.commands import CreatePayment, ListPayments
from payment_svc.domain.errors import InvalidArgument
from payment_svc.domain.model import (
    format_payment_id,
    parse_payment_id,
    request_fingerprint,
)
from payment_svc.domain.status import Move, PaymentStatus, decide
from payment_svc.service_layer.ids import new_payment_uuid
from payments_kit.cards import contains_card_number, luhn_valid, redact_card_numbers

P, U, S, F, R = (
    PaymentStatus.PENDING,
    PaymentStatus.UNKNOWN,
    PaymentStatus.SUCCEEDED,
    PaymentStatus.FAILED,
    PaymentStatus.REVERSED,
)

# SPEC §4, cell by cell: (from, to) -> allowed for an ordinary source.
ALLOWED = {(P, P), (P, U), (P, S), (P, F), (U, P), (U, S), (U, F), (S, R)}
AUTHORITATIVE_EXTRA = {(S, F), (F, S)}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(PaymentStatus, repeat=2)))
def test_transition_table_matches_the_spec(current: PaymentStatus, target: PaymentStatus) -> None:
    ordinary = decide(current, target, authoritative=False)
    authoritative = decide(current, target, authoritative=True)
    if (current, target) in ALLOWED:
        assert ordinary is Move.APPLY
        assert authoritative is Move.APPLY
    elif (current, target) in AUTHORITATIVE_EXTRA:
        assert ordinary is Move.REJECT
        assert authoritative is Move.APPLY
    elif current is target:
        assert ordinary is Move.NOOP
    else:
        assert ordinary is Move.REJECT
        assert authoritative is Move.REJECT


def test_final_states_never_go_back_to_pending_or_unknown() -> None:
    for final in (S, F, R):
        assert final.is_final
        for target in (P, U):
            assert decide(final, target, authoritative=True) is Move.REJECT
    assert not P.is_final
    assert not U.is_final


def test_reversed_is_terminal() -> None:
    for target in PaymentStatus:
        assert decide(R, target, authoritative=True) in (Move.REJECT, Move.NOOP)


def valid(**overrides: object) -> CreatePayment:
    fields: dict[str, object] = {
        "idempotency_key": "order-1",
        "amount": 1999,
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "description": "",
        "metadata": {},
    }
    fields.update(overrides)
    return CreatePayment(**fields)  # type: ignore[arg-type]


def violations(cmd: CreatePayment) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as exc:
        cmd.validate()
    return {v.field: v.description for v in exc.value.violations}


def test_a_valid_command_passes() -> None:
    valid().validate()
    valid(
        amount=1, idempotency_key="k" * 255, metadata={f"k{i}": "v" * 500 for i in range(50)}
    ).validate()
    valid(amount=99_999_999, currency="JPY").validate()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 100_000_000}, "amount"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "XXY"}, "currency"),
        ({"currency": ""}, "currency"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"idempotency_key": "tab\there"}, "idempotency_key"),
        ({"payment_method": ""}, "payment_method"),
        ({"payment_method": "card_visa"}, "payment_method"),
        ({"payment_method": "4242424242424242"}, "payment_method"),
        ({"description": "x" * 1001}, "description"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k" * 41: "v"}}, "metadata"),
        ({"metadata": {"note": "v" * 501}}, "metadata[note]"),
        ({"metadata": {"": "v"}}, "metadata[]"),
        ({"metadata": {"card": "4242 4242 4242 4242"}}, "metadata[card]"),
    ],
)
def test_each_input_rule_names_its_field(overrides: dict[str, object], field: str) -> None:
    assert field in violations(valid(**overrides))


def test_violations_never_echo_card_numbers() -> None:
    found = violations(
        valid(payment_method="4000-0566-5566-5556", metadata={"x": "4242424242424242"})
    )
    assert all("4242" not in d and "5556" not in d for d in found.values())


def test_luhn() -> None:
    assert luhn_valid("4242424242424242")
    assert luhn_valid("4000056655665556")
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "card 4242 4242 4242 4242 thanks",
        "4242-4242-4242-4242",
        "378282246310005",
    ],
)
def test_card_numbers_are_found(text: str) -> None:
    assert contains_card_number(text)
    assert "[REDACTED-PAN]" in redact_card_numbers(text)
    assert "4242424242424242" not in redact_card_numbers(text).replace(" ", "").replace("-", "")


@pytest.mark.parametrize(
    "text", ["order 12345", "4242424242424241", "1234567890123456789012345", "pm_card_visa"]
)
def test_other_numbers_are_not_cards(text: str) -> None:
    assert not contains_card_number(text)


@given(hs.uuids())
def test_uuids_are_never_card_numbers(value: object) -> None:
    assert not contains_card_number(str(value))
    assert not contains_card_number(f"order-{value}")


def test_a_card_number_beside_a_uuid_is_still_found() -> None:
    text = "12345678-4242-4242-4242-123456789012 and 4242 4242 4242 4242"
    assert contains_card_number(text)
    kept = "12345678-4242-4242-4242-123456789012 and [REDACTED"
    assert redact_card_numbers(text).startswith(kept)


@given(hs.text())
def test_redaction_never_leaves_a_card_number(text: str) -> None:
    assert not contains_card_number(redact_card_numbers(text))


def test_fingerprint_tells_parameters_apart() -> None:
    a = request_fingerprint(100, "USD", "pm_card_visa", "", {"a": "1", "b": "2"})
    assert a == request_fingerprint(100, "USD", "pm_card_visa", "", {"b": "2", "a": "1"})
    assert a != request_fingerprint(101, "USD", "pm_card_visa", "", {"a": "1", "b": "2"})
    assert a != request_fingerprint(100, "USD", "pm_card_visa", "", {"a": "1"})


def test_payment_ids_round_trip_and_sort_by_time() -> None:
    ids = [new_payment_uuid() for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    for i in ids:
        assert parse_payment_id(format_payment_id(i)) == i
    assert parse_payment_id("pay_nothex") is None
    assert parse_payment_id(str(ids[0])) is None


def test_list_page_size_is_clamped_and_validated() -> None:
    assert ListPayments(page_size=0).effective_page_size == 20
    assert ListPayments(page_size=1000).effective_page_size == 100
    with pytest.raises(InvalidArgument):
        ListPayments(page_size=-1).validate()
