"""Catch-up: the provider's events since the checkpoint, replayed oldest first
through ApplyProviderEvent (the path webhooks take; its inbox applies an
event once, so replaying what a webhook already brought is harmless).

    checkpoint "catch_up" = {"created": unix time, "event_id": last event replayed}

    event id known    GET /v1/events?ending_before=<id>  -> the page right after it
                      (newest first: replayed reversed), checkpoint saved, next page
    no id / id gone   pages back from created[gte]=<time> to the oldest page,
                      replay it, then forward as above
    first run ever    <time> = now - RECONCILER_SETTLEMENT_WINDOW_SECONDS

The checkpoint is saved after each page, so a reconciler killed mid-run
resumes where it stopped; replicas share it (a replica that saves an older
position only causes harmless replays).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import structlog

from payments.errors import InvalidArgument, PaymentsClientError
from payments_stripe.objects import ProviderEvent
from payments_stripe.reader import NotFoundAtProvider, ProviderError
from reconciler.context import JobContext
from reconciler.retry import retrying
from reconciler.runs import JobFailed, Tally

log = structlog.get_logger("reconciler")

CHECKPOINT = "catch_up"


@dataclass(frozen=True)
class Position:
    created: int
    event_id: str = ""

    def encode(self) -> str:
        return json.dumps({"created": self.created, "event_id": self.event_id})

    @classmethod
    def decode(cls, value: str) -> Position | None:
        """None for no checkpoint, or one we cannot read (then we start afresh)."""
        try:
            raw = json.loads(value) if value else None
        except ValueError:
            raw = None
        if not isinstance(raw, dict) or not isinstance(raw.get("created"), int):
            return None
        event_id = raw.get("event_id")
        return cls(raw["created"], event_id if isinstance(event_id, str) else "")


async def catch_up(ctx: JobContext, tally: Tally) -> None:
    try:
        await _catch_up(ctx, tally)
    except ProviderError as exc:
        raise JobFailed(f"provider events: {exc}") from None
    except PaymentsClientError as exc:
        raise JobFailed(f"payment-svc: {exc}") from None


async def _catch_up(ctx: JobContext, tally: Tally) -> None:
    saved = await retrying(lambda: ctx.client.get_checkpoint(CHECKPOINT))
    position = Position.decode(saved)
    if position is None:
        since = ctx.now() - timedelta(seconds=ctx.settings.settlement_window_seconds)
        position = Position(int(since.timestamp()))
    log.info("catch_up_from", created=position.created, event_id=position.event_id)
    if position.event_id:
        try:
            await _forward(ctx, tally, position)
            return
        except NotFoundAtProvider:
            # The provider no longer has that event (Stripe keeps 30 days).
            log.warning("catch_up_cursor_gone", event_id=position.event_id)
    await _from_time(ctx, tally, position.created)


async def _from_time(ctx: JobContext, tally: Tally, since: int) -> None:
    limit = ctx.settings.page_size
    page = await ctx.provider.events_page(created_gte=since, limit=limit)
    while page.has_more and page.items:
        page = await ctx.provider.events_page(
            created_gte=since, starting_after=page.items[-1].id, limit=limit
        )
    if not page.items:
        return
    position = await _replay_page(ctx, tally, page.items)
    await _forward(ctx, tally, position)


async def _forward(ctx: JobContext, tally: Tally, position: Position) -> None:
    while True:
        page = await ctx.provider.events_page(
            ending_before=position.event_id, limit=ctx.settings.page_size
        )
        if not page.items:
            return
        position = await _replay_page(ctx, tally, page.items)
        if not page.has_more:
            return


async def _replay_page(
    ctx: JobContext, tally: Tally, newest_first: list[ProviderEvent]
) -> Position:
    for event in reversed(newest_first):
        tally.scanned += 1
        await _replay(ctx, tally, event)
    newest = newest_first[0]
    position = Position(newest.created, newest.id)
    await retrying(lambda: ctx.client.save_checkpoint(CHECKPOINT, position.encode()))
    log.info("catch_up_checkpoint", created=position.created, event_id=position.event_id)
    return position


async def _replay(ctx: JobContext, tally: Tally, event: ProviderEvent) -> None:
    try:
        reply = await retrying(
            lambda: ctx.client.apply_provider_event(
                event.id, event.type, event.created, event.payload
            )
        )
    except InvalidArgument as exc:
        # payment-svc refuses this event outright: replaying it again will not
        # help, so it is counted and skipped.
        tally.errors += 1
        log.error("provider_event_refused", provider_event_id=event.id, error=str(exc))
        return
    # Any other error ends the run (JobFailed); the checkpoint is before this page.
    if reply.quarantined:
        # Kept in payment-svc's quarantine and reported there: handled.
        log.warning(
            "provider_event_quarantined",
            provider_event_id=event.id,
            quarantine_id=reply.quarantine_id,
        )
        return
    # A replay of an event already recorded (a webhook brought it) reports how
    # it went the first time: not a change this run made.
    tally.fixed += reply.applied and not reply.duplicate
    ctx.findings.recorded_by_payment_svc(tally, reply.discrepancies, reply.payment_id, "")
    if not reply.payment_id and not reply.duplicate:
        log.info("provider_event_unmatched", provider_event_id=event.id, event_type=event.type)
