"""Our Standard Webhooks signer and verifier (payments.webhooks) against
the reference package `standardwebhooks`: each accepts what the other
signs, during a rotation too, and both refuse the same forgeries."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from payments.client import (
    WebhookSignatureError,
    WebhookTimestampError,
    verify_webhook,
)
from payments.webhooks import sign, signature


def _secret(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


@given(
    key=st.binary(min_size=24, max_size=64),
    msg_id=st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40),
    body=st.binary(max_size=2000),
)
def test_our_signature_is_the_reference_signature(key: bytes, msg_id: str, body: bytes) -> None:
    stamp = int(time.time())
    reference = Webhook(_secret(key)).sign(msg_id, datetime.fromtimestamp(stamp, UTC), body)
    assert signature(key, msg_id, stamp, body) == reference


def test_the_reference_verifies_our_headers_with_either_secret_of_a_rotation() -> None:
    new, old = os.urandom(32), os.urandom(32)
    body = b'{"type":"payment.updated","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    headers = sign([new, old], "0b7f3c8e-update", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for key in (new, old):
        assert Webhook(_secret(key)).verify(body, headers) == {
            "type": "payment.updated",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {},
        }
        verify_webhook(headers, body, [_secret(key)])
    with pytest.raises(WebhookVerificationError):
        Webhook(_secret(os.urandom(32))).verify(body, headers)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(headers, body, [_secret(os.urandom(32))])


def test_we_verify_what_the_reference_signs_and_refuse_tampering() -> None:
    key = os.urandom(24)
    body = b'{"a":1}'
    stamp = int(time.time())
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": Webhook(_secret(key)).sign(
            "msg_1", datetime.fromtimestamp(stamp, UTC), body
        ),
    }
    verify_webhook(headers, body, [_secret(key)])
    verify_webhook(headers, body, [key])  # the key's bytes do too
    for tampered_headers, tampered_body in (
        (headers, b'{"a":2}'),
        ({**headers, "Webhook-Id": "msg_2"}, body),
        ({**headers, "Webhook-Timestamp": str(stamp + 1)}, body),
        ({k: v for k, v in headers.items() if k != "Webhook-Signature"}, body),
        ({**headers, "Webhook-Signature": "v2," + headers["Webhook-Signature"][3:]}, body),
    ):
        with pytest.raises(WebhookSignatureError):
            verify_webhook(tampered_headers, tampered_body, [_secret(key)])


def test_old_and_future_timestamps_are_refused_like_the_reference() -> None:
    key = os.urandom(32)
    body = b"{}"
    now = int(time.time())
    for stamp in (now - 301, now + 301):
        headers = sign([key], "msg", stamp, body)
        with pytest.raises(WebhookTimestampError):
            verify_webhook(headers, body, [_secret(key)])
        with pytest.raises(WebhookVerificationError):
            Webhook(_secret(key)).verify(body, headers)
    # A wider tolerance accepts it (the caller's choice).
    verify_webhook(sign([key], "msg", now - 301, body), body, [_secret(key)], tolerance=600)
