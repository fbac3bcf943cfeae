"""The bench's feed phase: payments at a fixed rate (open loop), first with
no watcher, then with `watchers` WatchPaymentUpdates streams open (in a
process of their own, feed_watchers.py); reports the updates delivered per
second, the delay from an update's commit to its receipt (p50, p99), and the
payments' own p99 with and without the watchers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments_dev.loadgen import PhaseResult, Window

Progress = Callable[[str], None]
# Runs one open-loop window of payments at the bench's rate.
OpenLoop = Callable[[Window], Coroutine[Any, Any, PhaseResult]]


@dataclass
class FeedResult:
    watchers: int
    without: PhaseResult
    with_watchers: PhaseResult
    watched: dict[str, Any]  # feed_watchers.py's report

    @property
    def delivered_per_second(self) -> float:
        seconds = self.watched.get("seconds") or 1.0
        return float(self.watched.get("delivered", 0)) / seconds

    @property
    def p99_ratio(self) -> float | None:
        before = self.without.latency_us()["p99"]
        return self.with_watchers.latency_us()["p99"] / before if before else None

    def to_json(self) -> dict[str, Any]:
        return {
            "watchers": self.watchers,
            "without_watchers": self.without.to_json(),
            "with_watchers": self.with_watchers.to_json(),
            "updates_delivered": self.watched.get("delivered"),
            "updates_delivered_per_second": round(self.delivered_per_second, 1),
            "commit_to_delivery_us": self.watched.get("lag_us"),
            "watcher_errors": self.watched.get("errors"),
            "payments_p99_with_over_without": (
                round(self.p99_ratio, 3) if self.p99_ratio is not None else None
            ),
        }


def lines(result: FeedResult) -> list[str]:
    lag = result.watched.get("lag_us") or {}
    ratio = f"{result.p99_ratio:.2f}" if result.p99_ratio is not None else "n/a"
    return [
        f"feed: {result.watched.get('delivered', 0)} updates delivered to {result.watchers} "
        f"watchers in {result.watched.get('seconds', 0):g}s = "
        f"{result.delivered_per_second:.0f}/s ({result.delivered_per_second / result.watchers:.0f}"
        "/s each)",
        "feed: commit to delivery p50 "
        f"{lag.get('p50', 0) / 1000:.1f} ms, p90 {lag.get('p90', 0) / 1000:.1f} ms, p99 "
        f"{lag.get('p99', 0) / 1000:.1f} ms, max {lag.get('max', 0) / 1000:.1f} ms",
        f"feed: payments p99 with watchers / without: {ratio}"
        + (f"; watcher errors: {result.watched['errors']}" if result.watched.get("errors") else ""),
    ]


async def latest_cursor(target: str, token: str) -> str:
    """The cursor after every update the client has: the watchers start there."""
    cursor = ""
    async with grpc.aio.insecure_channel(target) as channel:
        stub: svc_grpc.PaymentServiceAsyncStub = svc_grpc.PaymentServiceStub(channel)
        while True:
            reply = await stub.ListPaymentUpdates(
                svc.ListPaymentUpdatesRequest(after_cursor=cursor, page_size=500),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
            if not reply.updates:
                return reply.next_cursor
            cursor = reply.next_cursor


async def run(
    target: str,
    token: str,
    watchers: int,
    window: Callable[[], Window],
    open_loop: OpenLoop,
    quiesce: Callable[[], Coroutine[Any, Any, None]],
    progress: Progress,
) -> FeedResult:
    progress("feed: payments without watchers")
    without = await open_loop(window())
    await quiesce()
    cursor = await latest_cursor(target, token)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payments_dev.feed_watchers",
        target,
        token,
        cursor,
        str(watchers),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the watchers did not start: {ready!r}")
        progress(f"feed: payments with {watchers} watchers")
        measured = window()
        proc.stdin.write(f"{measured.start_ns} {measured.end_ns}\n".encode())
        await proc.stdin.drain()
        with_watchers = await open_loop(measured)
        report = await asyncio.wait_for(proc.stdout.readline(), 60)
        watched: dict[str, Any] = json.loads(report)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return FeedResult(watchers, without, with_watchers, watched)
