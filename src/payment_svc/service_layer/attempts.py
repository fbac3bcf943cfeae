"""The one attempt path of calls that ask the provider to move money
(CreatePayment, RedrivePayment, RefundPayment):

    Attempts.run(coro)   the attempt runs as a task of its own, tracked (drain
                         waits for it on SIGTERM) and shielded (the caller's
                         cancellation stops the wait, not the attempt: the
                         provider's answer is not lost)
    write_until(...)     the answer's write, retried while the database is
                         unavailable, until the caller's deadline (always one
                         try, even past it: the caller may be gone, the answer
                         is still worth keeping)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from payment_svc.domain.errors import StoreUnavailable

T = TypeVar("T")


class Attempts:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def drain(self, timeout: float) -> None:
        """Waits for the attempts still running (their callers may be gone)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


def left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    """Seconds to the caller's deadline on the loop's clock (None: none)."""
    return None if deadline is None else deadline - loop.time()


async def write_until(
    write: Callable[[], Awaitable[T]],
    seconds: float,
    give_up: Callable[[BaseException], Exception],
) -> T:
    """`write()` until it succeeds, retrying StoreUnavailable and timeouts
    for `seconds`; then the exception `give_up` makes of the last error."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    pause = 0.05
    while True:
        remaining = end - loop.time()
        try:
            async with asyncio.timeout(remaining if remaining > 0 else None):
                return await write()
        except (StoreUnavailable, TimeoutError) as exc:
            if end - loop.time() <= pause:
                raise give_up(exc) from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
