"""One attempt's HTTP and its safety rules (SPEC §3d), and what an answer
means (retry.py). Traffic goes only to receivers on 127.0.0.1; the
connect-time check is proven with a resolver stub that answers a forbidden
address, so nothing is ever connected to."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from payments_dev.devdb import free_port
from webhook_dispatcher.retry import Answer, Outcome, decide, parse_retry_after
from webhook_dispatcher.sender import Sender

SCHEDULE = (5.0, 300.0, 1800.0)


class StubResolver(AbstractResolver):
    """Answers every name with one address; never asks DNS."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [
            ResolveResult(hostname=host, host=self.address, port=port, family=fam, proto=0, flags=0)
        ]

    async def close(self) -> None:
        pass


async def _sender(production: bool, resolver: AbstractResolver | None = None) -> Sender:
    sender = Sender(production=production, timeout=2.0, resolver=resolver)
    await sender.open()
    return sender


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "169.254.169.254", "100.64.1.1", "fd00::1", "64:ff9b::a00:1", "::1"]
)
async def test_a_name_resolving_to_a_forbidden_address_is_not_connected_to(address: str) -> None:
    resolver = StubResolver(address)
    sender = await _sender(True, resolver)
    try:
        answer, _ = await sender.post("https://hooks.example.com/x", b"{}", {})
    finally:
        await sender.close()
    assert answer == Answer(error="address_not_allowed")
    assert resolver.asked == ["hooks.example.com"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",  # production: no http, no loopback
        "https://127.0.0.1:9/x",
        "https://[::1]:9/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest",
        "https://[::ffff:10.0.0.1]/",
    ],
)
async def test_forbidden_urls_are_refused_before_any_connection(url: str) -> None:
    sender = await _sender(True, StubResolver("93.184.216.34"))
    try:
        answer, _ = await sender.post(url, b"{}", {})
    finally:
        await sender.close()
    assert answer.status == 0 and answer.error in ("address_not_allowed", "url_not_allowed")


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        hits.append("redirect")
        raise web.HTTPFound("/target")

    async def target(request: web.Request) -> web.StreamResponse:
        hits.append("target")
        return web.Response(status=200)

    async def huge(request: web.Request) -> web.StreamResponse:
        hits.append("huge")
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(1000):  # 64 MiB offered; 64 KiB read
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/target", target)
    app.router.add_post("/huge", huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


async def test_redirects_are_not_followed(site: tuple[str, list[str]]) -> None:
    base, hits = site
    sender = await _sender(False)
    try:
        answer, _ = await sender.post(base + "/redirect", b"{}", {})
    finally:
        await sender.close()
    assert (answer.status, answer.error) == (302, "redirect")
    assert hits == ["redirect"]
    assert decide(answer, 1, SCHEDULE, 0)[0] is Outcome.RETRY


async def test_only_64_kib_of_an_answer_is_read(site: tuple[str, list[str]]) -> None:
    base, _ = site
    sender = await _sender(False)
    try:
        answer, seconds = await sender.post(base + "/huge", b"{}", {})
    finally:
        await sender.close()
    assert answer.status == 200
    assert seconds < 2


async def test_development_allows_http_to_loopback_only(site: tuple[str, list[str]]) -> None:
    base, _ = site
    sender = await _sender(False, StubResolver("93.184.216.34"))
    try:
        ok, _ = await sender.post(base + "/target", b"{}", {})
        refused, _ = await sender.post("http://hooks.example.com/x", b"{}", {})
    finally:
        await sender.close()
    assert ok.status == 200
    assert refused.error == "url_not_allowed"


def test_what_an_answer_means() -> None:
    def fixed(a: float, b: float) -> float:
        return b  # the jitter's upper bound

    assert decide(Answer(status=204), 1, SCHEDULE, 0.1) == (Outcome.DELIVERED, 0.0)
    assert decide(Answer(status=410), 2, SCHEDULE, 0.1) == (Outcome.GONE, 0.0)
    assert decide(Answer(status=500), 1, SCHEDULE, 0.1, fixed) == (Outcome.RETRY, 5.5)
    assert decide(Answer(error="timeout"), 3, SCHEDULE, 0.1, fixed)[1] == pytest.approx(1980)
    assert decide(Answer(status=500), 4, SCHEDULE, 0.1) == (Outcome.GIVEN_UP, 0.0)
    assert decide(Answer(status=429, retry_after=42), 1, SCHEDULE, 0.1) == (Outcome.RETRY, 42)
    assert decide(Answer(status=503, retry_after=10**9), 1, SCHEDULE, 0.1)[1] == 86400
    # Retry-After on other statuses is the schedule's business.
    assert decide(Answer(status=500, retry_after=42), 1, SCHEDULE, 0, fixed) == (Outcome.RETRY, 5)


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
