"""The card-number rule (payments_kit.cards): the networks' test numbers
are found in every digit form, alone or in text, grouped or not; identifiers
(hex keys, UUIDs, ids with a prefix) are not taken for cards."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from payment_svc.adapters.db import Database
from payment_svc.adapters.stripe_observations import parse_event
from payment_svc.domain.commands import CreatePayment
from payment_svc.domain.errors import InvalidArgument, UnprocessableEvent
from payments_kit.cards import (
    REDACTED,
    contains_card_number,
    is_card_number,
    luhn_valid,
    redact_card_numbers,
    redact_value,
)
from tests.pci_cards import FORMS, TEST_CARDS, find_cards

KEYS_PER_KIND = 100_000


def test_the_test_cards_are_cards() -> None:
    for card in TEST_CARDS:
        assert luhn_valid(card), card
        assert is_card_number(card), card


@pytest.mark.parametrize("form", list(FORMS))
def test_every_test_card_is_found_in_every_form_alone_and_in_text(form: str) -> None:
    for card in TEST_CARDS:
        text = FORMS[form](card)
        for value in (
            text,
            f"card {text} thanks",
            f"{text}\n",
            f"({text})",
            f"n°{text}.",
            f"order-{text}",
        ):
            assert contains_card_number(value), (card, value)
            redacted = redact_card_numbers(value)
            assert REDACTED in redacted
            assert find_cards(redacted) == [], (value, redacted)


def test_a_card_followed_by_its_expiry_is_found() -> None:
    assert redact_card_numbers("4242 4242 4242 4242 12/34") == f"{REDACTED} 12/34"
    arabic = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))
    text = "4242 4242 4242 4242 1234 x".translate(arabic)
    assert redact_card_numbers(text) == f"{REDACTED} {'1234'.translate(arabic)} x"


@pytest.mark.parametrize(
    "text",
    [
        "evt_4242424242424242",  # inside a longer token
        "deadbeef4242424242424242",
        "4242424242424242cafe",
        "12345678-4242-4242-4242-123456789012",
        "a1b2c3d4-4242-4242-4242-4242a1b2c3d4",
        "1234567812345670",  # Luhn-valid, but no network starts with 1
        "9999999999999995",  # nor with 99
        "4242424242424241",  # Luhn-invalid
        "424242424242424242424242",  # too long, taken whole
        "42424242424",  # too short
    ],
)
def test_identifiers_and_other_numbers_are_not_cards(text: str) -> None:
    assert not contains_card_number(text)
    assert redact_card_numbers(text) == text


def test_random_hex_keys_and_uuids_are_accepted() -> None:
    rng = random.Random(20261128)
    kinds = {
        "uuid": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "uuid_hex": lambda: uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        "hex128": lambda: f"{rng.getrandbits(128):032x}",
        "hex256": lambda: f"{rng.getrandbits(256):064x}",
    }
    for kind, make in kinds.items():
        refused = [k for k in (make() for _ in range(KEYS_PER_KIND)) if contains_card_number(k)]
        assert refused == [], (kind, refused[:5])


def test_hex_keys_are_valid_idempotency_keys() -> None:
    # The key that the old rule refused (a Luhn-valid run inside a UUID hex).
    for key in ("0f4242424242424242c3b1e2d4a5f6e7", "a1b2c3d44000056655665556e8f9a0b1"):
        CreatePayment(key, 100, "USD", "pm_card_visa").validate()


@pytest.mark.parametrize("form", list(FORMS))
def test_a_card_in_any_form_is_refused_in_every_field(form: str) -> None:
    card = FORMS[form]("4000056655665556")
    cases = [
        {"description": card},
        {"metadata": {"note": card}},
        {"metadata": {card: "x"}},
        {"payment_method": card},
        {"payment_method": f"pm_{card}"},
    ]
    if card.isascii():
        cases.append({"idempotency_key": card})
    for fields in cases:
        kwargs = {
            "idempotency_key": "k",
            "amount": 100,
            "currency": "USD",
            "payment_method": "pm_card_visa",
            **fields,
        }
        with pytest.raises(InvalidArgument):
            CreatePayment(**kwargs).validate()  # type: ignore[arg-type]


def test_json_is_redacted_structurally_and_stays_json() -> None:
    document = {
        "amount": 4242424242424242,
        "float": 4242424242424242.0,
        "negative": -5555555555554444,
        "4000056655665556": {
            "nested": [f"x {FORMS['fullwidth']('4242424242424242')} y", 1, None, True]
        },
        "fine": "pay_0193abcd",
    }
    redacted = redact_value(json.loads(json.dumps(document)))
    text = json.dumps(redacted, ensure_ascii=False)
    assert find_cards(text) == []
    assert json.loads(text) == {
        "amount": REDACTED,
        "float": REDACTED,
        "negative": REDACTED,
        REDACTED: {"nested": [f"x {REDACTED} y", 1, None, True]},
        "fine": "pay_0193abcd",
    }


@given(
    hs.sampled_from(TEST_CARDS),
    hs.sampled_from(list(FORMS)),
    hs.text(alphabet=" .,;:!?()[]{}\"'/\n\t|=+*#", max_size=3),
    hs.text(alphabet=" .,;:!?()[]{}\"'/\n\t|=+*#", max_size=3),
    hs.text(max_size=20),
)
def test_a_standalone_card_is_always_found(
    card: str, form: str, before: str, after: str, context: str
) -> None:
    text = f"{context} {before}{FORMS[form](card)}{after} {context}"
    assert contains_card_number(text)
    assert find_cards(redact_card_numbers(text), [card]) == []


@given(hs.text())
def test_redaction_is_idempotent_and_leaves_no_card(text: str) -> None:
    once = redact_card_numbers(text)
    assert not contains_card_number(once)
    assert redact_card_numbers(once) == once


def test_a_provider_event_is_redacted_where_it_is_parsed() -> None:
    card = "4000056655665556"
    fullwidth = FORMS["fullwidth"](card)
    event = {
        "id": card,
        "type": "payment_intent.payment_failed",
        "created": 1_700_000_000,
        "data": {
            "object": {
                "id": FORMS["spaces"](card),
                "object": "payment_intent",
                "status": "requires_payment_method",
                "amount": 1000,
                "metadata": {"payment_id": card, card: card},
                "last_payment_error": {"code": card, "message": f"declined {fullwidth}"},
            }
        },
    }
    parsed = parse_event(json.dumps(event).encode())
    assert parsed.id == REDACTED
    obs = parsed.observation
    assert (obs.provider_payment_id, obs.metadata_payment_id) == (REDACTED, REDACTED)
    assert (obs.failure_code, obs.failure_message) == (REDACTED, f"declined {REDACTED}")
    stored = json.loads(parsed.stored_json)
    assert find_cards(json.dumps(stored, ensure_ascii=False)) == []
    unknown = parse_event(json.dumps({**event, "type": f"charge.{fullwidth}"}).encode())
    assert unknown.type == f"charge.{REDACTED}"
    # A card number where an amount stands is no amount: the event is not
    # understood (quarantined by the caller), never applied without one.
    event["data"]["object"]["amount"] = int(card)
    with pytest.raises(UnprocessableEvent, match="amount"):
        parse_event(json.dumps(event).encode())


async def test_every_text_and_jsonb_value_written_is_redacted(database_url: str) -> None:
    db = Database(database_url, timeout=5)
    await db.open()
    try:
        card = FORMS["arabic_indic"]("5555555555554444")

        async def echo(conn: Any) -> tuple[str, Any]:
            text = await conn.fetchval("SELECT $1::text", f"paid with {card}")
            document = await conn.fetchval("SELECT $1::jsonb", {card: [int("5555555555554444")]})
            return text, document

        assert await db.run(echo) == (f"paid with {REDACTED}", {REDACTED: [REDACTED]})
    finally:
        await db.close()
