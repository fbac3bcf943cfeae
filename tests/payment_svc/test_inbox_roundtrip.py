"""An event the inbox accepted must parse again when it is read back from
Postgres (the rematch of unmatched events, a replay): jsonb prints numbers in
plain decimal notation, so 1e300 would come back as 301 digits, which the
parser refuses. Such an event used to stop the rematch round for every row."""

from __future__ import annotations

import json

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from payment_svc.adapters.stripe_observations import parse_event
from payment_svc.domain.errors import UnprocessableEvent


def _event(extra: object) -> bytes:
    return json.dumps(
        {
            "id": "evt_roundtrip",
            "type": "payment_intent.succeeded",
            "created": 1_700_000_000,
            "data": {"object": {"id": "pi_x", "object": "payment_intent", "extra": extra}},
        }
    ).encode()


async def _round_trip(db: asyncpg.Pool, stored_json: str) -> str:
    text: str = await db.fetchval("SELECT $1::jsonb::text", stored_json)
    return text


@pytest.mark.parametrize("literal", ["1e300", "-1e300", "1e-300", "1e39", "1.5e-19"])
async def test_an_accepted_number_parses_again_after_postgres(
    db: asyncpg.Pool, literal: str
) -> None:
    payload = _event(0).replace(b'"extra": 0', b'"extra": ' + literal.encode())
    try:
        parsed = parse_event(payload)
    except UnprocessableEvent:
        return  # refused at the door: quarantined, never in the inbox
    again = parse_event((await _round_trip(db, parsed.stored_json)).encode())
    assert again.id == parsed.id


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    extra=hs.recursive(
        hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False) | hs.text(),
        lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(), inner, max_size=4),
        max_leaves=12,
    )
)
async def test_whatever_the_parser_accepts_survives_a_round_trip(
    db: asyncpg.Pool, extra: object
) -> None:
    try:
        parsed = parse_event(_event(extra))
    except UnprocessableEvent:
        return
    again = parse_event((await _round_trip(db, parsed.stored_json)).encode())
    assert (again.id, again.type) == (parsed.id, parsed.type)
