"""One HTTP attempt, and the safety rules around it (SPEC §3d).

    the URL's host      an address: checked here; a name: resolved by
                        CheckedResolver, which refuses the whole answer if any
                        address is forbidden, so aiohttp connects only to an
                        address that was checked (DNS cannot swap it between
                        the check and the connect)
    redirects           never followed: a 3xx is a failed attempt
    the answer          at most 64 KiB of it is read
    time                one bound for the whole attempt (10 s by default)
    proxies             none (trust_env=False): the address checked is the
                        address connected to

Development allows http and loopback addresses; production neither.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from payments_kit.webhook_addresses import address_allowed, is_loopback_name
from webhook_dispatcher.retry import Answer, parse_retry_after
from webhook_dispatcher.settings import MAX_RESPONSE_BYTES

USER_AGENT = "payments-webhooks/1"


class AddressNotAllowed(OSError):
    """The host resolved to an address the platform does not post to."""


class CheckedResolver(AbstractResolver):
    def __init__(self, inner: AbstractResolver, *, production: bool) -> None:
        self._inner = inner
        self._production = production

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._production and is_loopback_name(host.rstrip(".")):
            raise AddressNotAllowed(f"{host} is a loopback name")
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            address = ipaddress.ip_address(answer["host"].split("%", 1)[0])
            if not address_allowed(address, production=self._production):
                raise AddressNotAllowed("the host resolves to a forbidden address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _literal_refused(url: str, production: bool) -> str:
    """An error word when the URL itself is not allowed, else ''."""
    parts = URL(url)
    if parts.scheme not in ("https", "http") or not parts.host:
        return "url_not_allowed"
    host = parts.host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        loopback = is_loopback_name(host.rstrip("."))
        if parts.scheme == "http" and (production or not loopback):
            return "url_not_allowed"
        return ""
    if not address_allowed(address, production=production):
        return "address_not_allowed"
    if parts.scheme == "http" and (production or not address.is_loopback):
        return "url_not_allowed"
    return ""


class Sender:
    def __init__(
        self,
        *,
        production: bool,
        timeout: float,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._production = production
        self._timeout = timeout
        self._resolver = CheckedResolver(
            resolver or aiohttp.ThreadedResolver(), production=production
        )
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver, limit=0, limit_per_host=16, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[Answer, float]:
        """The answer and how long the attempt took. Never raises for the
        endpoint's behaviour: every failure is an Answer."""
        assert self._session is not None, "open() first"
        started = time.monotonic()
        refused = _literal_refused(url, self._production)
        if refused:
            return Answer(error=refused), 0.0
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._post(url, body, headers)
        except TimeoutError:
            answer = Answer(error="timeout")
        except aiohttp.ClientConnectorError as exc:
            denied = isinstance(getattr(exc, "os_error", None), AddressNotAllowed)
            answer = Answer(error="address_not_allowed" if denied else "connect")
        except (aiohttp.ClientError, OSError):
            answer = Answer(error="connection")
        return answer, time.monotonic() - started

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert self._session is not None
        all_headers: dict[str, Any] = {**headers, "Content-Type": "application/json"}
        async with self._session.post(
            url, data=body, headers=all_headers, allow_redirects=False
        ) as response:
            await response.content.read(MAX_RESPONSE_BYTES)
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if 300 <= status <= 399:
                return Answer(status=status, error="redirect")
            return Answer(status=status, retry_after=retry_after)
