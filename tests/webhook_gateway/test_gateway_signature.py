"""Stripe-Signature verification, pure: the matrix, rotation, and agreement with the stripe SDK."""

from __future__ import annotations

import time

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from payments_stripe.signature import InvalidSignature as SignatureError
from payments_stripe.signature import SignatureFailure as Reason
from payments_stripe.signature import Verifier, parse_header, sign

NEW, OLD = "whsec_new", "whsec_old"
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded","created":1,"data":{"object":{}}}'
NOW = 1_700_000_000


def reason(verifier: Verifier, header: str | None, body: bytes = BODY, now: float = NOW) -> Reason:
    with pytest.raises(SignatureError) as caught:
        verifier.verify(header, body, now)
    return caught.value.reason


def flip_one_bit(body: bytes, index: int = 10) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Reason.MISSING_HEADER),
        ("", Reason.MISSING_HEADER),
        ("   ", Reason.MISSING_HEADER),
        ("garbage", Reason.MALFORMED_HEADER),
        ("v1=abc", Reason.MALFORMED_HEADER),  # no timestamp
        (f"t={NOW}", Reason.MALFORMED_HEADER),  # no signature
        (f"t={NOW},v0=abc", Reason.MALFORMED_HEADER),  # only a scheme we do not check
        ("t=soon,v1=abc", Reason.MALFORMED_HEADER),
        ("t=-5,v1=abc", Reason.MALFORMED_HEADER),
        ("t=1e9,v1=abc", Reason.MALFORMED_HEADER),
        ("t=" + "9" * 40 + ",v1=abc", Reason.MALFORMED_HEADER),
        (f"t={NOW},t={NOW},v1=abc", Reason.MALFORMED_HEADER),
        (f"t={NOW},v1=", Reason.NO_MATCHING_SIGNATURE),
        (f"t={NOW},v1=abc", Reason.NO_MATCHING_SIGNATURE),
        (f"t={NOW},v1=é", Reason.NO_MATCHING_SIGNATURE),
    ],
)
def test_unreadable_or_unsigned_headers_are_refused_with_their_reason(
    header: str | None, expected: Reason
) -> None:
    assert reason(Verifier([NEW], 300), header) == expected


def test_a_correct_signature_verifies_and_names_its_timestamp() -> None:
    verified = Verifier([NEW], 300).verify(sign(BODY, NEW, NOW), BODY, NOW)
    assert (verified.timestamp, verified.secret_index) == (NOW, 0)


def test_the_wrong_secret_does_not_verify() -> None:
    assert reason(Verifier([NEW], 300), sign(BODY, "whsec_other", NOW)) == (
        Reason.NO_MATCHING_SIGNATURE
    )


def test_one_flipped_bit_in_the_body_does_not_verify() -> None:
    header = sign(BODY, NEW, NOW)
    assert reason(Verifier([NEW], 300), header, flip_one_bit(BODY)) == (
        Reason.NO_MATCHING_SIGNATURE
    )


def test_a_signature_with_another_timestamp_does_not_verify() -> None:
    forged = sign(BODY, NEW, NOW).replace(f"t={NOW}", f"t={NOW + 1}")
    assert reason(Verifier([NEW], 300), forged) == Reason.NO_MATCHING_SIGNATURE


@pytest.mark.parametrize("offset", [-600, 600, -301, 301])
def test_timestamps_outside_the_tolerance_are_refused_both_ways(offset: int) -> None:
    header = sign(BODY, NEW, NOW + offset)
    assert reason(Verifier([NEW], 300), header) == Reason.TIMESTAMP_OUTSIDE_TOLERANCE


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_within_the_tolerance_verify(offset: int) -> None:
    Verifier([NEW], 300).verify(sign(BODY, NEW, NOW + offset), BODY, NOW)


def test_during_rotation_both_secrets_verify_and_say_which_matched() -> None:
    verifier = Verifier([NEW, OLD], 300)
    assert verifier.verify(sign(BODY, NEW, NOW), BODY, NOW).secret_index == 0
    assert verifier.verify(sign(BODY, OLD, NOW), BODY, NOW).secret_index == 1
    both = f"t={NOW},v1={_v1(OLD)},v1={_v1(NEW)}"
    assert verifier.verify(both, BODY, NOW).secret_index == 0


def test_after_rotation_the_removed_secret_no_longer_verifies() -> None:
    assert reason(Verifier([NEW], 300), sign(BODY, OLD, NOW)) == Reason.NO_MATCHING_SIGNATURE


def test_other_schemes_and_unknown_items_are_ignored() -> None:
    header = f"t={NOW},v0=deadbeef,v1=0000,v1={_v1(NEW)},future=1,junk"
    assert Verifier([NEW], 300).verify(header, BODY, NOW).timestamp == NOW
    assert parse_header(header).signatures == ("0000", _v1(NEW))


def test_a_header_made_by_the_stripe_sdk_verifies() -> None:
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), NEW, now)
    assert Verifier([NEW], 300).verify(header, BODY, now).timestamp == now


def test_our_signature_is_the_one_the_stripe_sdk_checks() -> None:
    now = int(time.time())
    stripe.WebhookSignature.verify_header(BODY, sign(BODY, NEW, now), NEW, tolerance=300)


@given(
    body=st.text(max_size=500),
    secret=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
    age=st.integers(min_value=0, max_value=300),
)
def test_we_agree_with_the_stripe_sdk_on_any_body(body: str, secret: str, age: int) -> None:
    now = int(time.time())
    raw = body.encode()
    sdk_header = stripe.WebhookSignature.generate_signature_header(body, secret, now - age)
    assert Verifier([secret], 300).verify(sdk_header, raw, now).timestamp == now - age
    assert sign(raw, secret, now - age) == sdk_header
    if raw:
        with pytest.raises(SignatureError):
            Verifier([secret], 300).verify(sdk_header, flip_one_bit(raw, len(raw) // 2), now)


def _v1(secret: str) -> str:
    return sign(BODY, secret, NOW).split("v1=")[1]
