"""Use cases of the simulated provider: the ledger behind Stripe's API, plus faults.

    Stripe API (/v1)                       control API (/_sim)
      create_intent ─┐                       set_faults, settle, provider_cancel,
      cancel_intent ─┼─ idempotent POST      provider_refund, settle_refund, dispute,
      create_refund ─┘                       unrecorded_charge, ledger_rows, reset,
      retrieve_intent, list_intents,         configure_webhooks, event_rows, redeliver
      search_intents, retrieve_charge,
      retrieve_refund, list_refunds, list_events, retrieve_event

Every event the ledger records goes to the webhook deliverer while it runs
(`start()`/`stop()`, in the running loop).

With a state location (`settings.state_path`) the ledger, the stored idempotent
responses and the deliveries tell a StateStore (state.py) what changed, `start()`
loads what a previous run left and resumes its pending deliveries, and
`durable()` (awaited by the HTTP layer before every response) waits until what
the response reports is on disk. Without one there is no store and no cost.

Every /v1 request passes the gate (gate.py): injected latency, errors and held
answers, and the idempotency of POSTs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable

import structlog

from provider_sim import forms
from provider_sim.charges import DEFAULT_DISPUTE_REASON, DISPUTE_REASONS, charge_json, intent_json
from provider_sim.deliverer import WebhookDeliverer
from provider_sim.errors import ControlError, StripeApiError
from provider_sim.events import payment_id_of
from provider_sim.faults import Faults, FaultsError
from provider_sim.gate import Reply, RequestGate
from provider_sim.idempotency import (
    IdempotencyStore,
    StoredResponse,
)
from provider_sim.intents import IntentStatus, JsonObject, PaymentIntent
from provider_sim.ledger import (
    CreateRefund,
    Ledger,
    SettleOutcome,
)
from provider_sim.refunds import REFUND_FAILURE_REASONS, Refund, RefundStatus
from provider_sim.refusals import (
    ChargeNotFound,
    EventNotFound,
    IntentNotFound,
    InvalidTransition,
    LedgerError,
    RefundNotFound,
    RefundNotPending,
    RefundNotSucceeded,
    UnknownPaymentMethod,
)
from provider_sim.settings import SimSettings
from provider_sim.state import StateStore
from provider_sim.webhooks import DeliveryRecord, WebhookConfig, WebhookConfigError

log = structlog.get_logger("provider_sim")

SEARCH_URL = "/v1/payment_intents/search"
INTENTS_URL = "/v1/payment_intents"
EVENTS_URL = "/v1/events"
REFUNDS_URL = "/v1/refunds"
MAX_REDELIVER_COPIES = 1000


def encode(body: JsonObject) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Simulator:
    def __init__(self, settings: SimSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        retention_s = settings.idempotency_retention_s
        self.state = (
            None
            if settings.state_path is None
            else StateStore(settings.state_path, retention_s=retention_s)
        )
        state = self.state
        self.ledger = Ledger(journal=state)
        self.idempotency = IdempotencyStore(
            retention_s=retention_s, journal=None if state is None else state.key
        )
        self.faults = Faults()
        seed = settings.seed
        self._rng = rng or random.Random(seed)
        self.webhooks = WebhookDeliverer(
            settings.webhook_config(),
            lambda: self.faults,
            rng=random.Random(None if seed is None else seed + 1),
            journal=None if state is None else state.delivery,
        )
        self.gate = RequestGate(self.idempotency, lambda: self.faults, self._rng)
        self._unsubscribe: Callable[[], None] | None = None
        # Refunds of pm_card_refundFail due to fail on their own (refund_fail_after_ms).
        self._refund_timers: dict[str, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        snapshot = None if self.state is None else await self.state.open()
        if snapshot is not None:
            self.ledger.restore(
                snapshot.intents, snapshot.refunds, snapshot.disputes, snapshot.events
            )
            self.idempotency.restore(snapshot.keys)
        await self.webhooks.start()
        if snapshot is not None:
            self._rearm_refund_timers()
            resumed = self.webhooks.resume(snapshot.events, snapshot.deliveries)
            log.info(
                "provider_sim.state_loaded",
                path=str(self.settings.state_path),
                payment_intents=len(snapshot.intents),
                events=len(snapshot.events),
                idempotency_keys=len(snapshot.keys),
                deliveries_resumed=resumed,
            )
        self._unsubscribe = self.ledger.subscribe(self.webhooks.enqueue)

    async def stop(self) -> None:
        self._cancel_refund_timers()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.webhooks.stop()
        if self.state is not None:
            await self.state.close()

    async def durable(self) -> None:
        """Returns once everything changed so far is on disk (at once without a state)."""
        if self.state is not None:
            await self.state.durable()

    def close(self) -> None:
        """Let responses held by `timeout_after_charge` go, so shutdown is quick."""
        self.gate.close()

    # -- Stripe API -------------------------------------------------------------

    async def create_intent(
        self, api_key: str, idempotency_key: str | None, pairs: forms.FormPairs
    ) -> Reply:
        def execute() -> StoredResponse:
            command = forms.create_intent(pairs, idempotency_key)
            try:
                intent = self.ledger.create(command)
            except UnknownPaymentMethod as exc:
                raise StripeApiError.missing(str(exc), param="payment_method", status=400) from None
            if intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD and intent.last_payment_error:
                return StoredResponse(402, encode(StripeApiError.card_declined(intent).to_json()))
            return StoredResponse(200, encode(intent.to_json()))

        fingerprint = ("POST /v1/payment_intents", tuple(sorted(pairs)))
        return await self.gate.post(api_key, idempotency_key, fingerprint, execute)

    async def cancel_intent(
        self, api_key: str, idempotency_key: str | None, intent_id: str, pairs: forms.FormPairs
    ) -> Reply:
        def execute() -> StoredResponse:
            reason = forms.cancellation_reason(pairs)
            try:
                intent = self.ledger.cancel(intent_id, reason)
            except IntentNotFound as exc:
                raise StripeApiError.missing(str(exc), param="intent") from None
            except InvalidTransition as exc:
                raise StripeApiError.invalid(
                    str(exc), code="payment_intent_unexpected_state"
                ) from None
            return StoredResponse(200, encode(intent.to_json()))

        fingerprint = (f"POST /v1/payment_intents/{intent_id}/cancel", tuple(sorted(pairs)))
        return await self.gate.post(api_key, idempotency_key, fingerprint, execute)

    async def create_refund(
        self, api_key: str, idempotency_key: str | None, pairs: forms.FormPairs
    ) -> Reply:
        def execute() -> StoredResponse:
            command = forms.create_refund(pairs, idempotency_key)
            named_by = "payment_intent" if command.charge is None else "charge"
            try:
                refund = self._make_refund(command)
            except LedgerError as exc:
                raise StripeApiError.refused(exc, named_by=named_by) from None
            return StoredResponse(200, encode(refund.to_json()))

        fingerprint = ("POST /v1/refunds", tuple(sorted(pairs)))
        return await self.gate.post(api_key, idempotency_key, fingerprint, execute)

    async def retrieve_intent(self, intent_id: str, *, expand_charge: bool = False) -> JsonObject:
        await self.gate.before_read()
        try:
            return intent_json(self.ledger.get(intent_id), expand_charge=expand_charge)
        except IntentNotFound as exc:
            raise StripeApiError.missing(str(exc), param="intent") from None

    async def list_intents(self, params: forms.IntentListParams) -> JsonObject:
        await self.gate.before_read()
        try:
            intents, has_more = self.ledger.intents_page(
                params.created,
                limit=params.limit,
                starting_after=params.starting_after,
                ending_before=params.ending_before,
            )
        except IntentNotFound as exc:
            cursor = "starting_after" if params.starting_after is not None else "ending_before"
            raise StripeApiError.missing(str(exc), param=cursor, status=400) from None
        return {
            "object": "list",
            "data": [intent_json(i, expand_charge=params.expand_charge) for i in intents],
            "has_more": has_more,
            "url": INTENTS_URL,
        }

    async def retrieve_charge(self, charge_id: str) -> JsonObject:
        await self.gate.before_read()
        try:
            return charge_json(self.ledger.by_charge(charge_id))
        except ChargeNotFound as exc:
            raise StripeApiError.missing(str(exc), param="charge") from None

    async def retrieve_refund(self, refund_id: str) -> JsonObject:
        await self.gate.before_read()
        try:
            return self.ledger.refund_by_id(refund_id).to_json()
        except RefundNotFound as exc:
            raise StripeApiError.missing(str(exc), param="refund") from None

    async def list_refunds(self, params: forms.RefundListParams) -> JsonObject:
        await self.gate.before_read()
        try:
            refunds, has_more = self.ledger.refunds_page(
                params.created,
                limit=params.limit,
                payment_intent=params.payment_intent,
                charge=params.charge,
                starting_after=params.starting_after,
                ending_before=params.ending_before,
            )
        except LedgerError as exc:
            if isinstance(exc, RefundNotFound):
                cursor = "starting_after" if params.starting_after is not None else "ending_before"
                raise StripeApiError.missing(str(exc), param=cursor, status=400) from None
            named_by = "payment_intent" if params.charge is None else "charge"
            raise StripeApiError.refused(exc, named_by=named_by) from None
        return {
            "object": "list",
            "data": [refund.to_json() for refund in refunds],
            "has_more": has_more,
            "url": REFUNDS_URL,
        }

    async def search_intents(self, params: forms.SearchParams) -> JsonObject:
        await self.gate.before_read()
        found: list[PaymentIntent] = []
        has_more = False
        for intent in self.ledger.newest_first(payment_id=params.query.payment_id):
            if params.before_seq is not None and intent.seq >= params.before_seq:
                continue
            if params.query.matches(intent):
                if len(found) == params.limit:
                    has_more = True
                    break
                found.append(intent)
        return {
            "object": "search_result",
            "data": [intent_json(i, expand_charge=params.expand_charge) for i in found],
            "has_more": has_more,
            "next_page": forms.page_token(found[-1].seq) if has_more else None,
            "url": SEARCH_URL,
        }

    async def list_events(self, params: forms.EventListParams) -> JsonObject:
        await self.gate.before_read()
        try:
            events, has_more = self.ledger.events_page(
                params.query,
                starting_after=params.starting_after,
                ending_before=params.ending_before,
            )
        except EventNotFound as exc:
            cursor = "starting_after" if params.starting_after is not None else "ending_before"
            raise StripeApiError.missing(str(exc), param=cursor, status=400) from None
        return {"object": "list", "data": events, "has_more": has_more, "url": EVENTS_URL}

    async def retrieve_event(self, event_id: str) -> JsonObject:
        await self.gate.before_read()
        try:
            return self.ledger.event(event_id)
        except EventNotFound as exc:
            raise StripeApiError.missing(str(exc), param="id") from None

    # -- control API ------------------------------------------------------------

    def set_faults(self, update: object) -> Faults:
        try:
            self.faults = self.faults.merged(update)
        except FaultsError as exc:
            raise ControlError(400, exc.reason, exc.message) from None
        return self.faults

    def settle(self, intent_id: str, outcome: object) -> PaymentIntent:
        if not isinstance(outcome, str) or outcome not in list(SettleOutcome):
            raise ControlError(400, "invalid_outcome", "outcome must be 'succeeded' or 'failed'")
        settle_outcome = SettleOutcome(outcome)
        try:
            return self.ledger.settle(intent_id, settle_outcome)
        except IntentNotFound as exc:
            raise ControlError(404, "not_found", str(exc)) from None
        except InvalidTransition as exc:
            raise ControlError(409, "not_processing", str(exc)) from None

    def provider_cancel(self, intent_id: str, reason: object) -> PaymentIntent:
        """The provider cancels on its own (a processing charge is voided)."""
        if reason is None:
            reason = "automatic"
        if not isinstance(reason, str) or reason not in forms.PROVIDER_CANCELLATION_REASONS:
            known = ", ".join(sorted(forms.PROVIDER_CANCELLATION_REASONS))
            raise ControlError(400, "invalid_reason", f"reason must be one of {known}")
        try:
            return self.ledger.cancel(intent_id, reason, by_provider=True)
        except IntentNotFound as exc:
            raise ControlError(404, "not_found", str(exc)) from None
        except InvalidTransition as exc:
            raise ControlError(409, "not_cancelable", str(exc)) from None

    def provider_refund(self, intent_id: str, amount: object) -> JsonObject:
        """A refund made outside our API (e.g. from the provider's dashboard)."""
        if amount is not None and (
            isinstance(amount, bool) or not isinstance(amount, int) or amount < 1
        ):
            raise ControlError(400, "invalid_amount", "amount must be a positive integer")
        try:
            refund = self._make_refund(CreateRefund(payment_intent=intent_id, amount=amount))
        except LedgerError as exc:
            raise ControlError.refused(exc) from None
        return refund.to_json()

    def _make_refund(self, command: CreateRefund) -> Refund:
        """A refund, left pending by refund_pending_rate; one of pm_card_refundFail
        (succeeded at first, as on Stripe, or pending) fails on its own after
        refund_fail_after_ms, when that is set."""
        refund = self.ledger.refund(
            command, pending=self.gate.roll(self.faults.refund_pending_rate)
        )
        if self.ledger.fails_refunds(refund.payment_intent):
            self._fail_later(refund.id, self.faults.refund_fail_after_ms / 1000)
        return refund

    def _fail_later(self, refund_id: str, delay_s: float) -> None:
        if self.faults.refund_fail_after_ms:
            self._refund_timers[refund_id] = asyncio.get_running_loop().call_later(
                max(delay_s, 0.0), self._fail_on_its_own, refund_id
            )

    def _fail_on_its_own(self, refund_id: str) -> None:
        """Pending: it settles failed; succeeded: it fails after all (refund.failed).
        Failed or settled meanwhile, or forgotten by a reset: nothing to do."""
        self._refund_timers.pop(refund_id, None)
        with contextlib.suppress(RefundNotFound, RefundNotPending, RefundNotSucceeded):
            refund = self.ledger.refund_by_id(refund_id)
            if refund.status is RefundStatus.PENDING:
                self.ledger.settle_refund(refund_id, SettleOutcome.FAILED)
            else:
                self.ledger.fail_refund(refund_id)

    def _rearm_refund_timers(self) -> None:
        """After a restart: the refunds of pm_card_refundFail not failed yet
        fail when they were due (made + refund_fail_after_ms), or now."""
        delay_s = self.faults.refund_fail_after_ms / 1000
        now = time.time()
        for refund in self.ledger.all_refunds():
            if refund.status in (RefundStatus.PENDING, RefundStatus.SUCCEEDED) and (
                self.ledger.fails_refunds(refund.payment_intent)
            ):
                self._fail_later(refund.id, refund.created + delay_s - now)

    def _cancel_refund_timers(self) -> None:
        timers, self._refund_timers = self._refund_timers, {}
        for timer in timers.values():
            timer.cancel()

    def settle_refund(self, refund_id: str, outcome: object, failure_reason: object) -> JsonObject:
        """A pending refund completes or fails; without an outcome, as its card makes
        it (pm_card_refundFail: failed; any other: succeeded)."""
        if outcome is not None and (
            not isinstance(outcome, str) or outcome not in list(SettleOutcome)
        ):
            raise ControlError(400, "invalid_outcome", "outcome must be 'succeeded' or 'failed'")
        if failure_reason is not None and (
            not isinstance(failure_reason, str) or failure_reason not in REFUND_FAILURE_REASONS
        ):
            known = ", ".join(sorted(REFUND_FAILURE_REASONS))
            raise ControlError(400, "invalid_failure_reason", f"failure_reason: one of {known}")
        if failure_reason is not None and outcome != SettleOutcome.FAILED:
            raise ControlError(
                400, "invalid_failure_reason", "failure_reason goes with outcome 'failed' only"
            )
        try:
            refund = self.ledger.settle_refund(
                refund_id,
                None if outcome is None else SettleOutcome(outcome),
                failure_reason,
            )
        except (RefundNotFound, RefundNotPending) as exc:
            raise ControlError.refused(exc) from None
        return refund.to_json()

    def fail_refund(self, refund_id: str, failure_reason: object) -> JsonObject:
        """A succeeded refund fails later at the provider (a closed card)."""
        if failure_reason is not None and (
            not isinstance(failure_reason, str) or failure_reason not in REFUND_FAILURE_REASONS
        ):
            known = ", ".join(sorted(REFUND_FAILURE_REASONS))
            raise ControlError(400, "invalid_failure_reason", f"failure_reason: one of {known}")
        try:
            return self.ledger.fail_refund(refund_id, failure_reason).to_json()
        except LedgerError as exc:
            raise ControlError.refused(exc) from None

    def dispute(self, intent_id: str, reason: object) -> JsonObject:
        """The cardholder disputes the charge with their bank (a chargeback)."""
        if reason is None:
            reason = DEFAULT_DISPUTE_REASON
        if not isinstance(reason, str) or reason not in DISPUTE_REASONS:
            known = ", ".join(sorted(DISPUTE_REASONS))
            raise ControlError(400, "invalid_reason", f"reason must be one of {known}")
        try:
            return self.ledger.dispute(intent_id, reason).to_json()
        except LedgerError as exc:
            raise ControlError.refused(exc) from None

    def unrecorded_charge(self, amount: object, currency: object) -> PaymentIntent:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ControlError(400, "invalid_amount", "amount must be a positive integer")
        if amount > forms.MAX_AMOUNT:
            raise ControlError(400, "invalid_amount", f"amount must be at most {forms.MAX_AMOUNT}")
        if not isinstance(currency, str) or not forms.is_currency(currency):
            raise ControlError(400, "invalid_currency", "currency must be a 3-letter ISO code")
        return self.ledger.record_unrecorded_charge(amount, currency.lower())

    def ledger_rows(
        self, *, idempotency_key: str | None, payment_id: str | None
    ) -> list[JsonObject]:
        intents = self.ledger.intents(idempotency_key=idempotency_key, payment_id=payment_id)
        return [
            intent.to_ledger_json()
            | {"refunds": [r.to_ledger_json() for r in self.ledger.refunds_of(intent.id)]}
            for intent in intents
        ]

    def configure_webhooks(self, update: object) -> WebhookConfig:
        try:
            return self.webhooks.configure(update)
        except WebhookConfigError as exc:
            raise ControlError(400, exc.reason, str(exc)) from None

    def webhooks_json(self) -> JsonObject:
        return self.webhooks.config.to_json() | {"stats": self.webhooks.stats.to_json()}

    def event_rows(self, *, event_type: str | None, payment_id: str | None) -> list[JsonObject]:
        """Recorded events, oldest first, each with what became of its delivery."""
        records = self.webhooks.records
        rows = []
        for event in self.ledger.events:
            if event_type is not None and event["type"] != event_type:
                continue
            if payment_id is not None and payment_id_of(event) != payment_id:
                continue
            record = records.get(event["id"])
            delivery = (record or DeliveryRecord()).to_json()
            rows.append(
                {
                    "id": event["id"],
                    "type": event["type"],
                    "created": event["created"],
                    "object_id": event["data"]["object"]["id"],
                    "payment_id": payment_id_of(event),
                }
                | delivery
                | {"event": event}
            )
        return rows

    def redeliver(self, event_id: str, copies: object) -> JsonObject:
        if copies is None:
            copies = 1
        if (
            isinstance(copies, bool)
            or not isinstance(copies, int)
            or not 1 <= copies <= MAX_REDELIVER_COPIES
        ):
            raise ControlError(
                400, "invalid_copies", f"copies must be an integer from 1 to {MAX_REDELIVER_COPIES}"
            )
        try:
            event = self.ledger.event(event_id)
        except EventNotFound as exc:
            raise ControlError(404, "not_found", str(exc)) from None
        if self.webhooks.config.url is None:
            raise ControlError(409, "no_webhook_url", "no webhook URL is configured")
        return self.webhooks.redeliver(event, copies).to_json()

    def reset(self, *, webhook_config: bool = False) -> None:
        """Forget intents, events, keys, faults, pending deliveries and delivery stats,
        on disk too. The webhook endpoint stays as configured unless `webhook_config`
        is set."""
        if self.state is not None:
            self.state.reset()
        self._cancel_refund_timers()
        self.ledger.clear()
        self.idempotency.clear()
        self.faults = Faults()
        self.webhooks.reset(config=webhook_config)
