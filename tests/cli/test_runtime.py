"""The garbage-collector setup of our long-running processes (payments_kit.runtime)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from payments_kit import runtime


@pytest.fixture
def restored_gc() -> Iterator[None]:
    callbacks = list(gc.callbacks)
    yield
    gc.callbacks[:] = callbacks
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.mark.usefixtures("restored_gc")
def test_startup_heap_is_frozen_and_later_garbage_still_collected() -> None:
    runtime.freeze_startup_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # modules, classes, the test session's objects
    assert gc.get_count()[0] == 0
    for _ in range(100):
        Node()
    assert gc.collect() >= 100  # cycles made after the freeze are collected
    assert gc.get_freeze_count() == frozen  # and a plain collection freezes nothing


@pytest.mark.usefixtures("restored_gc")
def test_survivors_of_each_full_collection_are_frozen() -> None:
    runtime.freeze_after_full_collections()
    runtime.freeze_after_full_collections()  # idempotent: one callback
    assert gc.callbacks.count(runtime._freeze_survivors) == 1
    before = gc.get_freeze_count()
    books = [{"intent": i, "metadata": {"n": str(i)}} for i in range(10_000)]
    garbage = [Node() for _ in range(100)]
    del garbage
    assert gc.collect(1) >= 100  # a young collection frees cycles, freezes nothing
    assert gc.get_freeze_count() == before
    gc.collect(2)
    assert gc.get_freeze_count() >= before + len(books)
    assert books[-1]["metadata"] == {"n": "9999"}
