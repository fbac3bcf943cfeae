"""An event the inbox accepted must parse again when it is read back from
Postgres (the rematch of unmatched events, a replay): jsonb prints numbers in
plain decimal notation, so 1e300 would come back as 301 digits, which the
parser refuses. Such an event used to stop the rematch round for every row."""

from __future__ import annotations

import json
import math
import re

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


# What the door refuses, stated apart from the parser: what Postgres cannot
# store (NUL, lone surrogates), what it would print back too long to read
# (magnitudes past 1e40 or under 1e-20), and number literals over 64 characters.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _refusable(value: object) -> bool:
    if isinstance(value, str):
        return bool(_UNSTORABLE.search(value))
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return len(str(value)) > 64
    if isinstance(value, float):
        return not math.isfinite(value) or (value != 0 and not 1e-20 <= abs(value) < 1e40)
    if isinstance(value, list):
        return any(_refusable(v) for v in value)
    assert isinstance(value, dict)
    return any(_refusable(k) or _refusable(v) for k, v in value.items())


@pytest.mark.parametrize(
    ("literal", "accepted"),
    [("1e300", False), ("-1e300", False), ("1e-300", False), ("1e39", True), ("1.5e-19", True)],
)
async def test_an_accepted_number_parses_again_after_postgres(
    db: asyncpg.Pool, literal: str, accepted: bool
) -> None:
    payload = _event(0).replace(b'"extra": 0', b'"extra": ' + literal.encode())
    if not accepted:
        # Refused at the door (quarantined, never in the inbox): what
        # Postgres would print back for it the parser could not read.
        with pytest.raises(UnprocessableEvent):
            parse_event(payload)
        printed = await _round_trip(db, payload.decode())
        assert len(printed) > len(payload) + 15, printed
        return
    parsed = parse_event(payload)
    again = parse_event((await _round_trip(db, parsed.stored_json)).encode())
    assert (again.id, again.observation) == (parsed.id, parsed.observation)


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
    if _refusable(extra):
        with pytest.raises(UnprocessableEvent):
            parse_event(_event(extra))
        return
    parsed = parse_event(_event(extra))  # anything else is accepted
    again = parse_event((await _round_trip(db, parsed.stored_json)).encode())
    assert (again.id, again.type, again.observation) == (parsed.id, parsed.type, parsed.observation)
