"""provider-sim with a state location, as a real process: what it acknowledged
survives a SIGKILL and a restart on the same file (intents, charges, refunds with
their status, disputes, events, stored idempotent responses, pending webhooks)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from payments_dev.devdb import free_port
from payments_dev.stack import wait_for_port

PROVIDER_SIM = str(Path(sys.executable).parent / "provider-sim")
AUTH = {"Authorization": "Bearer sk_test_state"}


@dataclass
class SimProcess:
    """provider-sim on one port and one state file; started, killed, started again."""

    state: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PROVIDER_SIM, "--port", str(self.port), "--state", str(self.state)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port("127.0.0.1", self.port, 30, self.proc, "provider-sim")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[SimProcess]:
    process = SimProcess(tmp_path / "books" / "provider-sim.sqlite3", tmp_path / "sim.log")
    yield process
    process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, form: dict[str, str], key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = AUTH | ({"Idempotency-Key": key} if key else {})
    async with http.post(url, data=form, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def control(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with http.post(url, json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def intent_form(payment_method: str, payment_id: str, amount: int = 1250) -> dict[str, str]:
    return {
        "amount": str(amount),
        "currency": "usd",
        "payment_method": payment_method,
        "confirm": "true",
        "metadata[payment_id]": payment_id,
    }


async def books(http: aiohttp.ClientSession, sim: SimProcess) -> dict[str, Any]:
    """Everything the simulator shows of its books (delivery state left out)."""
    events = await get_json(http, f"{sim.url}/v1/events?limit=100")
    return {
        "ledger": await get_json(http, f"{sim.url}/_sim/ledger"),
        "intents": await get_json(http, f"{sim.url}/v1/payment_intents?limit=100"),
        "events": events["data"],
    }


async def test_acknowledged_books_survive_a_sigkill(
    sim_process: SimProcess, http: aiohttp.ClientSession
) -> None:
    sim_process.start()
    url = sim_process.url
    key = f"order-{uuid.uuid4().hex}"
    status, paid, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_1"), key
    )
    assert status == 200 and paid["status"] == "succeeded"
    _, processing, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_processing", "pay_2"), "k-2"
    )
    assert processing["status"] == "processing"
    status, declined, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_chargeDeclined", "pay_3"), "k-3"
    )
    assert status == 402
    status, canceled, _ = await post(
        http, f"{url}/v1/payment_intents/{declined['error']['payment_intent']['id']}/cancel",
        {"cancellation_reason": "abandoned"}, "cancel-3",
    )  # fmt: skip
    assert status == 200 and canceled["status"] == "canceled", canceled
    status, refund, _ = await post(
        http, f"{url}/v1/refunds", {"payment_intent": paid["id"], "amount": "250"}, "refund-1"
    )
    assert status == 200, refund
    _, disputed, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_4"), "k-4"
    )
    dispute = await control(http, f"{url}/_sim/payment_intents/{disputed['id']}/dispute", {})
    # A burst, killed the moment the last answer arrives: each one acknowledged is kept.
    burst = await asyncio.gather(
        *(
            post(http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", f"burst-{n}"))
            for n in range(40)
        )
    )
    before = await books(http, sim_process)
    sim_process.kill()

    sim_process.start()

    assert await books(http, sim_process) == before
    assert {row["metadata"]["payment_id"] for row in before["ledger"]["payment_intents"]} >= {
        f"burst-{n}" for n in range(40)
    }
    assert all(status == 200 for status, _, _ in burst)
    got = await get_json(http, f"{url}/v1/payment_intents/{paid['id']}?expand[]=latest_charge")
    assert got["status"] == "succeeded"
    assert got["latest_charge"]["amount_refunded"] == 250
    charge = await get_json(http, f"{url}/v1/charges/{paid['latest_charge']}")
    assert charge["payment_intent"] == paid["id"]
    assert await get_json(http, f"{url}/v1/refunds/{refund['id']}") == refund
    assert (await get_json(http, f"{url}/v1/payment_intents/{disputed['id']}"))["id"] == dispute[
        "payment_intent"
    ]
    # A retry with the same key is the same answer, and no new charge.
    status, replayed, headers = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_1"), key
    )
    assert (status, replayed) == (200, paid)
    assert headers.get("Idempotent-Replayed") == "true"
    status, again, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_chargeDeclined", "pay_3"), "k-3"
    )
    assert (status, again) == (402, declined)
    got = await get_json(http, f"{url}/v1/payment_intents/{canceled['id']}")
    assert got == canceled
    status, mismatch, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_1", 999), key
    )
    assert status == 400 and mismatch["error"]["type"] == "idempotency_error", mismatch
    ours = await get_json(http, f"{url}/_sim/ledger?payment_id=pay_1")
    assert [row["charges"] for row in ours["payment_intents"]] == [1]
    # The books go on: a processing intent settles, new ids follow the old ones.
    settled = await control(
        http, f"{url}/_sim/payment_intents/{processing['id']}/settle", {"outcome": "succeeded"}
    )
    assert settled["status"] == "succeeded"
    _, fresh, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_5"), "k-5"
    )
    listed = await get_json(http, f"{url}/v1/payment_intents?limit=100")
    assert listed["data"][0]["id"] == fresh["id"]
    assert len({i["id"] for i in listed["data"]}) == len(before["intents"]["data"]) + 1
    found = await get_json(
        http, f"{url}/v1/payment_intents/search?query=metadata['payment_id']:'pay_2'"
    )
    assert [i["id"] for i in found["data"]] == [processing["id"]]


async def test_reset_clears_the_books_on_disk(
    sim_process: SimProcess, http: aiohttp.ClientSession
) -> None:
    sim_process.start()
    url = sim_process.url
    form = intent_form("pm_card_visa", "pay_r")
    await post(http, f"{url}/v1/payment_intents", form, "reset-key")
    await control(http, f"{url}/_sim/reset", {})
    sim_process.kill()

    sim_process.start()

    assert (await get_json(http, f"{url}/_sim/ledger"))["payment_intents"] == []
    assert (await get_json(http, f"{url}/v1/events"))["data"] == []
    # The key was forgotten too: the same request charges anew.
    status, _, headers = await post(http, f"{url}/v1/payment_intents", form, "reset-key")
    assert status == 200 and "Idempotent-Replayed" not in headers
    assert len((await get_json(http, f"{url}/_sim/ledger"))["payment_intents"]) == 1


async def test_refunds_keep_their_status_across_a_sigkill(
    sim_process: SimProcess, http: aiohttp.ClientSession
) -> None:
    sim_process.start()
    url = sim_process.url
    _, paid, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_rf1", 1000), "k-rf1"
    )
    _, failing, _ = await post(
        http, f"{url}/v1/payment_intents", intent_form("pm_card_refundFail", "pay_rf2"), "k-rf2"
    )

    async def refund(intent: dict[str, Any], amount: int, key: str) -> dict[str, Any]:
        form = {"payment_intent": intent["id"], "amount": str(amount), "metadata[refund_id]": key}
        status, body, _ = await post(http, f"{url}/v1/refunds", form, key)
        assert status == 200, body
        return body

    await control(http, f"{url}/_sim/faults", {"refund_pending_rate": 1})
    pending = await refund(paid, 200, "ref-a")
    settled = await refund(paid, 100, "ref-d")
    await control(http, f"{url}/_sim/refunds/{settled['id']}/settle", {"outcome": "succeeded"})
    await control(http, f"{url}/_sim/faults", {"refund_pending_rate": 0})
    succeeded = await refund(paid, 300, "ref-b")
    failed = await refund(failing, 500, "ref-c")  # succeeded at first, as on Stripe
    await control(http, f"{url}/_sim/refunds/{failed['id']}/fail", {})
    before = await books(http, sim_process)
    before_refunds = await get_json(http, f"{url}/v1/refunds?limit=100")
    sim_process.kill()

    sim_process.start()

    assert await books(http, sim_process) == before
    assert await get_json(http, f"{url}/v1/refunds?limit=100") == before_refunds
    statuses = {
        r["id"]: (r["status"], r["amount"], r.get("failure_reason")) for r in before_refunds["data"]
    }
    assert statuses == {
        pending["id"]: ("pending", 200, None),
        settled["id"]: ("succeeded", 100, None),
        succeeded["id"]: ("succeeded", 300, None),
        failed["id"]: ("failed", 500, "expired_or_canceled_card"),
    }
    [ours] = (await get_json(http, f"{url}/_sim/ledger?payment_id=pay_rf1"))["payment_intents"]
    assert ours["amount_refunded"] == 600  # pending ones count
    assert [(r["id"], r["idempotency_key"]) for r in ours["refunds"]] == [
        (pending["id"], "ref-a"),
        (settled["id"], "ref-d"),
        (succeeded["id"], "ref-b"),
    ]
    [theirs] = (await get_json(http, f"{url}/_sim/ledger?payment_id=pay_rf2"))["payment_intents"]
    assert theirs["amount_refunded"] == 0
    # The books go on: the pending refund settles, a retried key replays.
    done = await control(http, f"{url}/_sim/refunds/{pending['id']}/settle", {"outcome": "failed"})
    assert (done["status"], done["failure_reason"]) == ("failed", "declined")
    form = {"payment_intent": paid["id"], "amount": "300", "metadata[refund_id]": "ref-b"}
    status, replayed, headers = await post(http, f"{url}/v1/refunds", form, "ref-b")
    assert (status, replayed["id"], replayed["status"]) == (200, succeeded["id"], "succeeded")
    assert headers.get("Idempotent-Replayed") == "true"
    rest = await refund(paid, 600, "ref-e")
    assert rest["status"] == "succeeded"
    listed = await get_json(http, f"{url}/v1/refunds?payment_intent={paid['id']}")
    assert [r["id"] for r in listed["data"]] == [
        rest["id"],
        succeeded["id"],
        settled["id"],
        pending["id"],
    ]


@dataclass
class Receiver:
    """A webhook endpoint that answers 500 until `accepting`."""

    accepting: bool = True
    delivered: list[str] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    async def _handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if not self.accepting:
            self.refused += 1
            return web.Response(status=500, text="not now")
        self.delivered.append(event["id"])
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhooks/stripe", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_pending_webhooks_are_delivered_after_a_restart(
    sim_process: SimProcess, http: aiohttp.ClientSession
) -> None:
    receiver = await Receiver().start()
    sim_process.env = {
        "PROVIDER_SIM_WEBHOOK_URL": receiver.url,
        "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "50",
        "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS": "200",
        "PROVIDER_SIM_WEBHOOK_MAX_ATTEMPTS": "1000",
    }
    try:
        sim_process.start()
        url = sim_process.url
        _, first, _ = await post(
            http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", "pay_w0"), "w0"
        )

        async def first_delivered() -> bool:
            rows = await get_json(http, f"{url}/_sim/events?payment_id=pay_w0")
            return bool(rows["events"]) and rows["events"][0]["delivery_state"] == "delivered"

        await eventually(first_delivered)
        receiver.accepting = False
        pending = []
        for n in range(1, 6):
            _, intent, _ = await post(
                http, f"{url}/v1/payment_intents", intent_form("pm_card_visa", f"pay_w{n}"), f"w{n}"
            )
            pending.append(intent["id"])

        async def refused_a_few() -> bool:
            return receiver.refused >= 10

        await eventually(refused_a_few)
        rows = (await get_json(http, f"{url}/_sim/events"))["events"]
        waiting = [row["id"] for row in rows if row["delivery_state"] == "pending"]
        assert len(waiting) == 5
        sim_process.kill()
        receiver.accepting = True
        assert not set(waiting) & set(receiver.delivered)

        sim_process.start()

        async def all_delivered() -> bool:
            return set(waiting) <= set(receiver.delivered)

        await eventually(all_delivered)
        assert receiver.delivered.count(receiver.delivered[0]) == 1, "delivered one sent again"
        rows = (await get_json(http, f"{url}/_sim/events"))["events"]
        assert {row["delivery_state"] for row in rows} == {"delivered"}
        assert [row["event"]["data"]["object"]["id"] for row in rows] == [first["id"], *pending]
    finally:
        await receiver.stop()


def test_in_memory_unless_given_a_state_location() -> None:
    from provider_sim import SIMULATOR, SimSettings, init_app

    assert SimSettings.from_env({}).state_path is None
    app = init_app(SimSettings())
    assert app[SIMULATOR].state is None
    given = SimSettings.from_env({"PROVIDER_SIM_STATE": "/var/lib/sim/books.sqlite3"})
    assert given.state_path == Path("/var/lib/sim/books.sqlite3")


def test_one_simulator_per_state(sim_process: SimProcess, tmp_path: Path) -> None:
    sim_process.start()
    second = subprocess.run(
        [PROVIDER_SIM, "--port", str(free_port()), "--state", str(sim_process.state)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "in use by another provider-sim" in second.stderr, second.stderr
    assert sim_process.proc is not None and sim_process.proc.poll() is None
