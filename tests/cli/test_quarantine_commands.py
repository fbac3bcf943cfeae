"""`payments quarantine` and `payments quarantine replay`: an operator lists
the provider events payment-svc could not process, and replays one (issue 10)."""

from __future__ import annotations

import json
import uuid

import grpc

from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import provider_sync_service_pb2_grpc as sync_grpc
from payments_dev.stack import DEV_TOKENS
from tests.cli.conftest import Cli
from tests.support import auth


async def _quarantine(channel: grpc.aio.Channel, payload: bytes, unreadable: str = "") -> str:
    reply = await sync_grpc.ProviderSyncServiceStub(channel).ApplyProviderEvent(
        sync.ApplyProviderEventRequest(payload=payload, unreadable_reason=unreadable),
        metadata=auth("gateway"),
        timeout=5,
    )
    assert reply.quarantined
    return reply.quarantine_id


async def test_an_operator_lists_and_replays_quarantined_events(
    cli: Cli, channel: grpc.aio.Channel
) -> None:
    poison = await _quarantine(
        channel, b'{"id": "evt_' + uuid.uuid4().hex.encode() + b'", "x": NaN}'
    )
    readable = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "some.future_type",
            "data": {"object": {"id": f"pi_{uuid.uuid4().hex[:12]}"}},
        }
    ).encode()
    fixed = await _quarantine(channel, readable, unreadable="the gateway could not read it")
    token = {"PAYMENTS_RECONCILER_TOKEN": DEV_TOKENS["reconciler"]}

    listed = cli("quarantine", "--json", **token)
    assert listed.returncode == 0, listed.stderr
    ids = {e["id"]: e for e in json.loads(listed.stdout)["events"]}
    assert {poison, fixed} <= ids.keys()
    assert ids[poison]["reason"]

    still = cli("quarantine", "replay", poison, **token)
    assert still.returncode == 1
    assert "still unprocessable" in still.stdout

    replayed = cli("quarantine", "replay", fixed, "--json", **token)
    assert replayed.returncode == 0, replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["still_quarantined"] is False
    assert answer["event"]["replayed_at"]

    after = json.loads(cli("quarantine", "--json", **token).stdout)
    assert fixed not in {e["id"] for e in after["events"]}
    every = json.loads(cli("quarantine", "--all", "--json", **token).stdout)
    assert fixed in {e["id"] for e in every["events"]}

    merchant = cli("quarantine", "--token", DEV_TOKENS["merchant"])
    assert merchant.returncode == 1
    assert "PERMISSION_DENIED" in merchant.stdout + merchant.stderr
