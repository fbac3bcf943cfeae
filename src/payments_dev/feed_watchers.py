"""The feed phase's watchers, in a process of their own (so that reading
tens of thousands of updates a second does not stall the load generator's
event loop): `python -m payments_dev.feed_watchers TARGET TOKEN CURSOR N`.

Protocol on stdin/stdout, one line each: it prints `ready` once its N
streams are open; reads `START_NS END_NS` (time.perf_counter_ns, the
machine's monotonic clock, shared with the parent); counts the updates
received in that window and the delay from each update's commit
(recorded_at, the outbox row's clock_timestamp() at commit) to its receipt;
prints one JSON object after the window and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import grpc
import uvloop
from hdrh.histogram import HdrHistogram

from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc


async def _watch(
    stub: svc_grpc.PaymentServiceAsyncStub,
    token: str,
    cursor: str,
    window: list[int],
    lag: HdrHistogram,
    counts: Counter[str],
    opened: asyncio.Event,
    streams: list[int],
) -> None:
    call = stub.WatchPaymentUpdates(
        svc.WatchPaymentUpdatesRequest(after_cursor=cursor),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    try:
        await call.wait_for_connection()
        streams.append(1)
        opened.set()
        async for reply in call:
            now = time.perf_counter_ns()
            if window and window[0] <= now < window[1]:
                wall = time.time_ns()
                for update in reply.updates:
                    counts["delivered"] += 1
                    committed_ns = update.recorded_at.ToNanoseconds()
                    lag.record_value(max(1, (wall - committed_ns) // 1000))
    except grpc.aio.AioRpcError as err:
        counts[f"error_{err.code().name}"] += 1


async def main(target: str, token: str, cursor: str, watchers: int) -> dict[str, Any]:
    lag = HdrHistogram(1, 60_000_000, 3)
    counts: Counter[str] = Counter()
    window: list[int] = []
    opened = asyncio.Event()
    streams: list[int] = []
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        stub: svc_grpc.PaymentServiceAsyncStub = svc_grpc.PaymentServiceStub(channel)
        tasks = [
            asyncio.create_task(_watch(stub, token, cursor, window, lag, counts, opened, streams))
            for _ in range(watchers)
        ]
        async with asyncio.timeout(30):
            while len(streams) < watchers:
                opened.clear()
                await opened.wait()
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        start_ns, end_ns = (int(x) for x in line.split())
        window.extend((start_ns, end_ns))
        await asyncio.sleep(max(0.0, (end_ns - time.perf_counter_ns()) / 1e9))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seconds = (end_ns - start_ns) / 1e9
    return {
        "watchers": watchers,
        "seconds": seconds,
        "delivered": counts.pop("delivered", 0),
        "lag_us": {
            "p50": lag.get_value_at_percentile(50),
            "p90": lag.get_value_at_percentile(90),
            "p99": lag.get_value_at_percentile(99),
            "max": lag.get_max_value(),
        },
        "errors": dict(counts),
    }


if __name__ == "__main__":
    target, token, cursor, n = sys.argv[1:5]
    result = uvloop.run(main(target, token, cursor, int(n)))
    print(json.dumps(result), flush=True)
