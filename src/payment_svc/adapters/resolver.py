"""Host names to addresses, for the check of a webhook URL at registration
(the service layer bounds the wait)."""

from __future__ import annotations

import asyncio
import socket


class SystemResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return sorted({str(info[4][0]) for info in infos})
