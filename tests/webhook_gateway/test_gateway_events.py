"""Parsing a verified body into a ProviderEvent, pure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_testkit import body_of, event

from webhook_gateway.errors import EventError, Reason
from webhook_gateway.events import EventType, ProviderEvent, parse_event


def test_a_provider_event_keeps_its_envelope_and_the_exact_bytes() -> None:
    document = event(type="payment_intent.processing", created=1_700_000_000)
    # Spacing the gateway would not produce itself: forwarded byte for byte.
    body = json.dumps(document, indent=3).encode()
    parsed = parse_event(body)
    assert parsed == ProviderEvent(document["id"], "payment_intent.processing", 1_700_000_000, body)
    assert parsed.payload is body
    assert parsed.kind is EventType.PAYMENT_INTENT_PROCESSING


def test_unknown_event_types_are_accepted_and_classified_unknown() -> None:
    parsed = parse_event(body_of(event(type="customer.created")))
    assert parsed.type == "customer.created"
    assert parsed.kind is EventType.UNKNOWN
    assert EventType.classify("unknown") is EventType.UNKNOWN


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": 1' + b"0" * 5000 + b"}",
    ],
)
def test_a_body_that_is_not_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(EventError) as caught:
        parse_event(body)
    assert caught.value.reason == Reason.INVALID_JSON


def _without(key: str) -> dict[str, Any]:
    document = event()
    del document[key]
    return document


@pytest.mark.parametrize(
    "document",
    [
        [1, 2],
        "evt_1",
        None,
        _without("id"),
        _without("type"),
        _without("created"),
        _without("data"),
        event(id="ch_123"),
        event(id=123),
        event(id="evt_" + "x" * 300),
        event(id="evt_ü"),
        event(type=""),
        event(type=7),
        event(type="payment_intent.succeeded\n"),
        event(type="\ud800"),
        event(created="1700000000"),
        event(created=1.5),
        event(created=True),
        event(created=-1),
        event(created=10**20),
        event(data=None),
        event(data={}),
        event(data={"object": "pi_123"}),
        event(data={"object": []}),
    ],
)
def test_an_envelope_that_is_not_an_event_is_invalid_event(document: Any) -> None:
    with pytest.raises(EventError) as caught:
        parse_event(json.dumps(document).encode())
    assert caught.value.reason == Reason.INVALID_EVENT
