"""The README's example receiver, run as written (its code block, with the
endpoint's secret), against a real dispatcher: it accepts what the platform
signs and refuses a forgery."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from payments.webhooks import sign
from payments_dev.devdb import free_port
from payments_dev.stack import Stack
from tests.support import auth, create_request, stub
from tests.webhook_dispatcher.dispatch_testkit import (
    create_endpoint,
    delete_endpoint,
    feed_of,
    start_dispatcher,
)

README = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "webhooks-to-callers.md"


def example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- example: webhook receiver -->\n```python\n(.*?)```", text, re.S)
    assert found, "the documented example receiver is gone"
    return found.group(1)


async def test_the_readme_receiver_accepts_signed_messages_and_refuses_forgeries(
    channel: grpc.aio.Channel, stack: Stack, tmp_path: Path
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example(), str(README), "exec"), namespace)  # the documented code, as is
    app: web.Application = namespace["app"]
    answers: list[int] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        answers.append(response.status)
        return response

    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hooks"
    endpoint = await create_endpoint(channel, url)
    namespace["SECRETS"][:] = [endpoint.secret]
    proc = start_dispatcher(stack, tmp_path, "readme")
    try:
        reply = await stub(channel).CreatePayment(create_request(), metadata=auth(), timeout=10)
        await asyncio.sleep(0.5)
        want = {u.id for u in await feed_of(channel, {reply.payment.id})}
        async with asyncio.timeout(30):
            while True:
                if want <= namespace["SEEN"]:
                    break
                await asyncio.sleep(0.1)
        assert set(answers) == {204}
        # A forgery (another key) and a replay from long ago are refused.
        body = b'{"type":"payment.updated"}'
        async with aiohttp.ClientSession() as http:
            for headers in (
                sign([b"k" * 32], "forged", int(time.time()), body),
                sign([b"k" * 32], "old", int(time.time()) - 3600, body),
            ):
                async with http.post(url, data=body, headers=headers) as response:
                    assert response.status == 400
    finally:
        proc.stop()
        await delete_endpoint(channel, endpoint.id)
        await runner.cleanup()
