"""How our long-running processes set up CPython's cyclic garbage collector.

A full (generation 2) collection walks every container object the process
holds, with the event loop stopped meanwhile. What a service holds after start
is mostly code: modules, classes, the gRPC, protobuf, asyncpg and stripe
machinery, about 60,000 objects that are never garbage. Walked again at every
full collection under load, they cost 20-40 ms of stop-the-world each time,
which lands on p99 latency.

    freeze_startup_heap()     at start, before listening: collect, then move
                              what survived into the permanent generation
                              (gc.freeze, as the gc docs advise for long-lived
                              processes); later full collections walk only what
                              came after. Call it before creating objects that
                              get replaced (a connection pool), so that those
                              stay collectable
    freeze_after_full_collections()
                              for a process whose state only grows (provider-sim's
                              in-memory books): after each full collection, what
                              survived it is frozen too, so a pause is bounded
                              by what was allocated since the last one, not by
                              the size of the books

Frozen objects are still freed by reference counting; only a reference cycle
among them is never collected. Startup objects form no such garbage.
"""

from __future__ import annotations

import gc
from typing import Any


def freeze_startup_heap() -> None:
    gc.collect()
    gc.freeze()


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    # "stop" of a full collection: everything still tracked survived it.
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def freeze_after_full_collections() -> None:
    freeze_startup_heap()
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
