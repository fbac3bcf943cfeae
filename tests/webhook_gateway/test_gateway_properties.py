"""Property: nothing about a request makes the gateway answer 5xx.

Choice: the gateway points at a closed port (payment-svc unreachable) and the inputs
are arbitrary, signed or not. Most are invalid; the few that are correctly signed
valid events get the 503 that an unreachable payment-svc must produce. So the
property is stated exactly: a 5xx only ever is a 503 for a request whose signature
verifies (checked independently with the pure verifier), and only such a request
is ever forwarded: an event, or (issue 10) a verified body that is no event, for
payment-svc's quarantine. Every other request gets a 4xx carrying one of the
stable reasons.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_testkit import SECRET, WEBHOOK, GatewayClient, forwarded, running, settings, signed
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payments_stripe.signature import InvalidSignature, Verifier
from webhook_gateway.errors import Reason

LIMIT = 2048

# Header values an HTTP client sends at all: no control characters.
header_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=200
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Envelope-shaped documents with every field fuzzed, some of them valid events.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(json_values, st.text(max_size=30).map("evt_".__add__)),
        "type": st.one_of(json_values, st.sampled_from(["payment_intent.succeeded", "x.y"])),
        "created": st.one_of(json_values, st.integers(min_value=-(2**70), max_value=2**70)),
        "data": st.one_of(json_values, st.builds(lambda o: {"object": o}, json_values)),
    },
)
# Envelopes whose fields are of the right kinds: many of them valid events.
events = st.fixed_dictionaries(
    {
        "id": st.one_of(st.from_regex(r"evt_[A-Za-z0-9]{1,30}", fullmatch=True), st.text()),
        "type": st.one_of(st.sampled_from(["payment_intent.succeeded", "x.y"]), st.text()),
        "created": st.one_of(st.integers(min_value=0, max_value=2**34), st.integers()),
        "data": st.dictionaries(st.text(max_size=8), json_values).map(lambda o: {"object": o}),
    },
    optional={"livemode": st.booleans(), "padding": st.text(max_size=100)},
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=LIMIT - 2, max_size=LIMIT + 2),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
    events.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    events.map(lambda v: json.dumps(v).encode() + b" " * LIMIT),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(bodies)
    headers: dict[str, str] = {}
    signature = draw(
        st.one_of(
            # Correct signatures, within the tolerance or at any distance from now.
            st.builds(
                lambda offset: signed(body, at=time.time() + offset)["Stripe-Signature"],
                st.integers(-250, 250),
            ),
            st.builds(
                lambda offset, secret: signed(body, secret, at=time.time() + offset)[
                    "Stripe-Signature"
                ],
                st.integers(min_value=-(10**6), max_value=10**6),
                st.sampled_from([SECRET, "whsec_wrong"]),
            ),
            # A correct one with arbitrary items around it.
            st.builds(
                lambda before, after: f"{before},{signed(body)['Stripe-Signature']},{after}",
                header_text,
                header_text,
            ),
            header_text,
            st.none(),
        )
    )
    if signature is not None:
        headers["Stripe-Signature"] = signature
    for name in ("X-Request-Id", "Content-Type"):
        if draw(st.booleans()):
            headers[name] = draw(header_text)
    return body, headers


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[GatewayClient]:
    async with running(settings(max_body_bytes=LIMIT, forward_timeout=1.0)) as client:
        yield client


def acceptable(body: bytes, headers: dict[str, str]) -> bool:
    """What the gateway must forward: verified with the active secret, in bounds
    (an event, or a body that is none, for payment-svc's quarantine)."""
    if len(body) > LIMIT:
        return False
    try:
        Verifier([SECRET], 300).verify(headers.get("Stripe-Signature"), body, time.time())
    except InvalidSignature:
        return False
    return True


REFUSALS = {r.value for r in Reason if not r.value.startswith("payment_service")}


# 400 round trips through the gateway: a budget that fits them (a hang, not
# speed, is what it catches).
@pytest.mark.timeout(60 + 400 * 0.2)
@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery=deliveries())
async def test_no_request_ever_gets_a_5xx_unless_it_is_a_valid_event_nobody_confirmed(
    gateway: GatewayClient, delivery: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = delivery
    forwarded_before = forwarded(gateway)
    async with gateway.post(WEBHOOK, data=body, headers=headers) as response:
        status = response.status
        answer: Any = await response.json()
    valid = acceptable(body, headers)
    event(f"{status} {answer['error']['reason']}")
    if valid:
        assert (status, answer["error"]["reason"]) == (503, "payment_service_unavailable")
        assert forwarded(gateway) == forwarded_before + 1
    else:
        assert 400 <= status < 500, (status, answer)
        assert answer["error"]["reason"] in REFUSALS
        assert forwarded(gateway) == forwarded_before
