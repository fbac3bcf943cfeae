"""Webhook endpoints' rules without I/O: URLs and addresses the platform
may post to (SPEC §3d), and the service layer's check of what a name
resolves to, with a stub resolver (no DNS query, no traffic)."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from payment_svc.domain import webhooks as w
from payment_svc.domain.errors import InvalidArgument, NotFound
from payment_svc.service_layer.feed_cursor import FeedCursors
from payment_svc.service_layer.pagination import PageTokens
from payment_svc.service_layer.webhooks import WebhookEndpointsService
from tests.payment_svc.fakes import FakeWebhookEndpoints, StubResolver

FORBIDDEN = [
    "0.0.0.0",
    "0.1.2.3",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "2002:a00:1::1",
    "2002:7f00:1::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1", "172.32.0.1"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses_are_refused_everywhere(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not w.address_allowed(ip, production=True)
    assert not w.address_allowed(ip, production=False)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_loopback_only_in_development(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert w.address_allowed(ip, production=False)
    assert not w.address_allowed(ip, production=True)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert w.address_allowed(ipaddress.ip_address(address), production=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",  # http off loopback
        "ftp://93.184.216.34/hook",
        "javascript:alert(1)",
        "https:///nohost",
        "https://user:pw@93.184.216.34/",
        "https://93.184.216.34/#frag",
        "https://93.184.216.34:0/",
        "https://93.184.216.34:99999/",
        "https://10.0.0.1/",
        "https://[fe80::1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://exa mple.com/",
        "https://bücher.example/",
        "https://example.com/\r\nHost: evil",
    ],
)
def test_urls_refused_in_development(url: str) -> None:
    with pytest.raises(w.UrlNotAllowed):
        w.check_url(url, production=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://[::1]/x",
        "https://localhost/",
    ],
)
def test_loopback_urls_are_development_only(url: str) -> None:
    w.check_url(url, production=False)
    with pytest.raises(w.UrlNotAllowed):
        w.check_url(url, production=True)


def test_length_limits_and_card_numbers() -> None:
    w.check_url("https://example.com/" + "a" * (w.MAX_URL_CHARS - 20), production=True)
    with pytest.raises(InvalidArgument) as exc:
        w.check_url("https://example.com/" + "a" * (w.MAX_URL_CHARS - 19), production=True)
    assert exc.value.violations[0].field == "url"
    w.check_description("d" * w.MAX_DESCRIPTION_CHARS)
    with pytest.raises(InvalidArgument):
        w.check_description("d" * (w.MAX_DESCRIPTION_CHARS + 1))
    with pytest.raises(InvalidArgument):
        w.check_description("card 4242 4242 4242 4242")
    with pytest.raises(InvalidArgument):
        w.check_url("https://example.com/4242424242424242", production=True)


def test_endpoint_ids() -> None:
    import uuid

    value = uuid.uuid4()
    assert w.parse_endpoint_id(w.format_endpoint_id(value)) == value
    for bad in ["", "we_", "we_zz", "pay_" + value.hex, value.hex, "we_" + value.hex + "0"]:
        assert w.parse_endpoint_id(bad) is None


def _service(resolver: StubResolver, production: bool = True) -> WebhookEndpointsService:
    return WebhookEndpointsService(
        FakeWebhookEndpoints(),
        resolver,
        FeedCursors(b"k" * 32),
        PageTokens(b"k" * 32),
        production=production,
    )


@pytest.mark.parametrize(
    "answer", [["10.0.0.7"], ["93.184.216.34", "169.254.169.254"], ["127.0.0.1"], ["fd00::1"]]
)
async def test_a_name_resolving_to_a_forbidden_address_is_refused(answer: list[str]) -> None:
    resolver = StubResolver(*answer)
    with pytest.raises(w.UrlNotAllowed) as exc:
        await _service(resolver).create("c1", "https://hooks.example.com/x", "")
    assert exc.value.reason == "WEBHOOK_URL_NOT_ALLOWED"
    assert resolver.asked == [("hooks.example.com", 443)]


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(w.UrlNotAllowed):
        await _service(StubResolver(fails=True)).create("c1", "https://nowhere.example/", "")
    with pytest.raises(w.UrlNotAllowed):
        await _service(StubResolver()).create("c1", "https://nowhere.example/", "")


async def test_create_shows_the_secret_once_and_keeps_the_limit() -> None:
    service = _service(StubResolver("93.184.216.34"))
    created = await service.create("c1", "https://hooks.example.com:8443/x", "orders")
    assert created.secret is not None and len(created.secret) == w.SECRET_BYTES
    text = w.format_secret(created.secret)
    assert text.startswith("whsec_") and base64.b64decode(text[6:]) == created.secret
    assert all(e.secret is None for e in await service.list("c1"))
    for _ in range(w.MAX_ENDPOINTS_PER_CLIENT - 1):
        await service.create("c1", "https://hooks.example.com/x", "")
    with pytest.raises(w.TooManyEndpoints):
        await service.create("c1", "https://hooks.example.com/x", "")
    await service.create("c2", "https://hooks.example.com/x", "")  # another client's count


async def test_other_clients_endpoints_are_not_found() -> None:
    service = _service(StubResolver("93.184.216.34"))
    mine = await service.create("c1", "https://hooks.example.com/x", "")
    endpoint_id = w.format_endpoint_id(mine.id)
    with pytest.raises(NotFound):
        await service.delete("c2", endpoint_id)
    with pytest.raises(NotFound):
        await service.rotate("c2", endpoint_id)
    with pytest.raises(NotFound):
        await service.update("c2", endpoint_id, w.EndpointChanges(enabled=False))
    with pytest.raises(NotFound):
        await service.deliveries("c2", endpoint_id, 0, "")
    with pytest.raises(NotFound):
        await service.redeliver("c2", endpoint_id, "")
    with pytest.raises(NotFound):
        await service.delete("c1", "we_nonsense")
    with pytest.raises(InvalidArgument):
        await service.delete("c1", "")
