"""Stripe's list pagination over append-only books: newest first, cursors, `created` windows.

Pure: no I/O. Events and payment intents are both appended in `created` order, so
one pager serves `GET /v1/events` and `GET /v1/payment_intents`:

    items (oldest first) ... [ before )   starting_after: older than the cursor, newest first
                             ( after ] ... ending_before: newer than the cursor, the page
                                           closest to it (still shown newest first)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CreatedRange:
    """Stripe's `created` filter: `created=t` or any of `created[gt|gte|lt|lte]=t`."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def accepts(self, created: int) -> bool:
        return (
            (self.gt is None or created > self.gt)
            and (self.gte is None or created >= self.gte)
            and (self.lt is None or created < self.lt)
            and (self.lte is None or created <= self.lte)
        )

    def below(self, created: int) -> bool:
        """Whether `created` is older than anything the range accepts."""
        return (self.gt is not None and created <= self.gt) or (
            self.gte is not None and created < self.gte
        )


def page_newest_first(
    items: Sequence[T],
    *,
    created: Callable[[T], int],
    window: CreatedRange,
    limit: int,
    matches: Callable[[T], bool] = lambda _: True,
    before: int | None = None,
    after: int | None = None,
) -> tuple[list[T], bool]:
    """One page of `items` (oldest first, as appended), newest first, and `has_more`.

    `before` (starting_after's position) keeps older items only and pages towards
    the past; `after` (ending_before's position) keeps newer ones: the page closest
    to it. Items are appended in `created` order, so a scan stops at the window.
    """
    if after is not None:
        found = [
            item for item in items[after + 1 :] if window.accepts(created(item)) and matches(item)
        ]
        return list(reversed(found[:limit])), len(found) > limit
    page: list[T] = []
    end = len(items) if before is None else before
    for index in range(end - 1, -1, -1):
        item = items[index]
        stamp = created(item)
        if window.below(stamp):
            break
        if window.accepts(stamp) and matches(item):
            if len(page) == limit:
                return page, True
            page.append(item)
    return page, False
