"""provider-sim's pure parts, without a server: ledger, idempotency, faults, search, settings."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
import stripe

from provider_sim import forms, search
from provider_sim.charges import charge_json, intent_json
from provider_sim.errors import StripeApiError
from provider_sim.events import EventListQuery, EventType
from provider_sim.faults import Faults, FaultsError
from provider_sim.idempotency import (
    IdempotencyStore,
    InFlight,
    Mismatch,
    Replay,
    Reservation,
    StoredResponse,
)
from provider_sim.intents import IntentStatus
from provider_sim.ledger import (
    CreateIntent,
    CreateRefund,
    Ledger,
    SettleOutcome,
)
from provider_sim.listing import CreatedRange
from provider_sim.refusals import (
    AlreadyDisputed,
    AlreadyRefunded,
    AmountTooLarge,
    ChargeDisputed,
    ChargeMismatch,
    ChargeNotFound,
    EventNotFound,
    IntentNotFound,
    InvalidTransition,
    NotSucceeded,
    UnknownPaymentMethod,
)
from provider_sim.settings import SettingsError, SimSettings
from provider_sim.signature import signature_header
from provider_sim.webhooks import DeliveryRecord, WebhookConfig, WebhookConfigError


def make_ledger() -> Ledger:
    counter = itertools.count(1)
    return Ledger(clock=lambda: 1_700_000_000.0, new_id=lambda p: f"{p}_{next(counter)}")


def command(payment_method: str | None = "pm_card_visa", **changes: Any) -> CreateIntent:
    values: dict[str, Any] = {
        "amount": 500,
        "currency": "usd",
        "payment_method": payment_method,
        "confirm": True,
        "description": None,
        "metadata": {"payment_id": "pay_1"},
        "idempotency_key": "k1",
    }
    return CreateIntent(**(values | changes))


class TestLedger:
    def test_outcomes_by_test_card(self) -> None:
        ledger = make_ledger()
        visa = ledger.create(command("pm_card_visa"))
        declined = ledger.create(command("pm_card_chargeDeclined"))
        processing = ledger.create(command("pm_card_processing"))
        unconfirmed = ledger.create(command("pm_card_visa", confirm=False))
        assert (visa.status, visa.charges, visa.amount_received) == (IntentStatus.SUCCEEDED, 1, 500)
        assert (declined.status, declined.charges) == (IntentStatus.REQUIRES_PAYMENT_METHOD, 0)
        assert declined.last_payment_error is not None
        assert (processing.status, processing.charges) == (IntentStatus.PROCESSING, 1)
        assert (unconfirmed.status, unconfirmed.charges) == (IntentStatus.REQUIRES_CONFIRMATION, 0)
        assert [e["type"] for e in ledger.events] == [
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "payment_intent.processing",
        ]
        assert ledger.events[0]["request"] == {"id": None, "idempotency_key": "k1"}

    def test_unknown_payment_method_creates_nothing(self) -> None:
        ledger = make_ledger()
        with pytest.raises(UnknownPaymentMethod):
            ledger.create(command("pm_nope"))
        assert ledger.intents() == []

    def test_settle_only_from_processing(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command("pm_card_processing"))
        ledger.settle(intent.id, SettleOutcome.FAILED)
        assert intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD
        assert intent.charges == 0
        with pytest.raises(InvalidTransition):
            ledger.settle(intent.id, SettleOutcome.SUCCEEDED)
        with pytest.raises(IntentNotFound):
            ledger.settle("pi_missing", SettleOutcome.SUCCEEDED)

    def test_cancel_respects_the_transition_table(self) -> None:
        ledger = make_ledger()
        done = ledger.create(command())
        with pytest.raises(InvalidTransition):
            ledger.cancel(done.id, None)
        assert done.canceled_at is None
        open_intent = ledger.create(command(confirm=False))
        ledger.cancel(open_intent.id, "duplicate")
        assert open_intent.status is IntentStatus.CANCELED

    def test_indexes_and_subscribers(self) -> None:
        ledger = make_ledger()
        seen: list[str] = []
        unsubscribe = ledger.subscribe(lambda event: seen.append(event["type"]))
        first = ledger.create(command(metadata={"payment_id": "a"}, idempotency_key="ka"))
        second = ledger.create(command(metadata={"payment_id": "a"}, idempotency_key="kb"))
        ledger.create(command(metadata={}, idempotency_key=None))
        assert ledger.intents(payment_id="a") == [first, second]
        assert ledger.intents(idempotency_key="kb") == [second]
        assert ledger.intents(idempotency_key="kb", payment_id="b") == []
        assert list(ledger.newest_first(payment_id="a")) == [second, first]
        unsubscribe()
        ledger.record_unrecorded_charge(100, "eur")
        assert seen == ["payment_intent.succeeded"] * 3
        ledger.clear()
        assert ledger.intents() == [] and ledger.events == []

    def test_provider_cancel_voids_a_processing_charge(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command("pm_card_processing"))
        with pytest.raises(InvalidTransition):
            ledger.cancel(intent.id, None)  # not through the API
        ledger.cancel(intent.id, "automatic", by_provider=True)
        assert (intent.status, intent.charges) == (IntentStatus.CANCELED, 0)
        assert [e["type"] for e in ledger.events][-1] == EventType.PAYMENT_INTENT_CANCELED

    def test_events_page_newest_first(self) -> None:
        now = [100.0]
        counter = itertools.count(1)
        ledger = Ledger(clock=lambda: now[0], new_id=lambda p: f"{p}_{next(counter)}")
        for _ in range(5):
            ledger.record_unrecorded_charge(100, "usd")
            now[0] += 10
        ids = [e["id"] for e in ledger.events]  # created 100, 110, ..., 140
        page, more = ledger.events_page(EventListQuery(limit=2))
        assert ([e["id"] for e in page], more) == (ids[:-3:-1], True)
        page, more = ledger.events_page(EventListQuery(limit=2), starting_after=ids[1])
        assert ([e["id"] for e in page], more) == ([ids[0]], False)
        page, more = ledger.events_page(EventListQuery(limit=2), ending_before=ids[1])
        assert ([e["id"] for e in page], more) == ([ids[3], ids[2]], True)
        since = EventListQuery(CreatedRange(gte=120), limit=10)
        assert [e["id"] for e in ledger.events_page(since)[0]] == ids[:1:-1]
        window = EventListQuery(CreatedRange(gt=100, lt=130), limit=10)
        assert [e["id"] for e in ledger.events_page(window)[0]] == [ids[2], ids[1]]
        assert ledger.events_page(EventListQuery(types=("charge.*",)))[0] == []
        assert ledger.event(ids[3]) is ledger.events[3]
        with pytest.raises(EventNotFound):
            ledger.events_page(EventListQuery(), starting_after="evt_nope")

    def test_intents_page_newest_first_in_a_window(self) -> None:
        now = [100.0]
        counter = itertools.count(1)
        ledger = Ledger(clock=lambda: now[0], new_id=lambda p: f"{p}_{next(counter)}")
        ids = []
        for _ in range(5):
            ids.append(ledger.record_unrecorded_charge(100, "usd").id)
            now[0] += 10  # created 100, 110, ..., 140

        def page(window: CreatedRange, **cursor: str) -> tuple[list[str], bool]:
            found, more = ledger.intents_page(window, limit=2, **cursor)
            return [intent.id for intent in found], more

        assert page(CreatedRange()) == (ids[:-3:-1], True)
        assert page(CreatedRange(), starting_after=ids[2]) == ([ids[1], ids[0]], False)
        assert page(CreatedRange(), ending_before=ids[1]) == ([ids[3], ids[2]], True)
        assert page(CreatedRange(gte=110, lt=130)) == ([ids[2], ids[1]], False)
        assert page(CreatedRange(gt=110, lte=140), starting_after=ids[3]) == ([ids[2]], False)
        assert page(CreatedRange(lt=100)) == ([], False)
        with pytest.raises(IntentNotFound):
            ledger.intents_page(CreatedRange(), limit=2, ending_before="pi_nope")

    def test_event_snapshot_does_not_change_later(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command("pm_card_processing"))
        ledger.settle(intent.id, SettleOutcome.SUCCEEDED)
        assert [e["data"]["object"]["status"] for e in ledger.events] == [
            "processing",
            "succeeded",
        ]


class TestWebhooks:
    def test_signature_is_the_one_the_sdk_checks(self) -> None:
        payload = b'{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}'
        header = signature_header("whsec_x", payload, 1_700_000_000)
        expected = stripe.WebhookSignature.generate_signature_header(
            payload.decode(), "whsec_x", timestamp=1_700_000_000
        )
        assert header == expected
        assert stripe.WebhookSignature.verify_header(payload, header, "whsec_x", tolerance=10**10)

    def test_retry_waits_grow_with_jitter_and_stop_at_the_cap(self) -> None:
        config = WebhookConfig(retry_initial_ms=1000, retry_max_ms=60_000)
        rng = random.Random(1)
        waits = [config.retry_delay_s(n, rng) for n in range(1, 12)]
        assert 0.75 <= waits[0] <= 1.0
        assert all(later > earlier for earlier, later in itertools.pairwise(waits[:7]))
        assert all(45 <= wait <= 60 for wait in waits[6:])
        assert config.retry_delay_s(10_000, rng) <= 60

    def test_partial_updates_and_validation(self) -> None:
        config = WebhookConfig().merged({"url": "https://example.com/hook"})
        config = config.merged({"retry_initial_ms": 5, "secret": "whsec_y"})
        assert (config.url, config.retry_initial_ms, config.secret) == (
            "https://example.com/hook",
            5,
            "whsec_y",
        )
        assert config.merged({"url": None}).url is None
        for bad in [
            {"url": "example.com/hook"},
            {"url": "http://host:99999/"},
            {"retry_max_ms": 1, "retry_initial_ms": 2},
            {"timeout_ms": 0},
            {"max_attempts": 1.5},
            {"secret": "  "},
        ]:
            with pytest.raises(WebhookConfigError):
                config.merged(bad)

    def test_delivery_record_states(self) -> None:
        record = DeliveryRecord()
        assert record.state == "no_endpoint"
        record.copies = 2
        record.delivered_copies = 1
        assert record.to_json()["delivered"] is True
        assert record.state == "pending"
        record.failed_copies = 1
        assert record.state == "failed"
        record.dropped = True  # an attempt lost in transit: the state still says how it ended
        assert record.state == "failed"


class TestIdempotencyStore:
    FINGERPRINT = ("POST /v1/payment_intents", (("amount", "1"),))

    def test_claim_replay_mismatch(self) -> None:
        store = IdempotencyStore(retention_s=10)
        reservation = store.claim("sk", "k", self.FINGERPRINT)
        assert isinstance(reservation, Reservation)
        assert isinstance(store.claim("sk", "k", self.FINGERPRINT), InFlight)
        assert isinstance(store.claim("sk_other", "k", self.FINGERPRINT), Reservation)
        store.complete(reservation, StoredResponse(200, b"{}"))
        assert store.claim("sk", "k", self.FINGERPRINT) == Replay(StoredResponse(200, b"{}"))
        assert isinstance(store.claim("sk", "k", ("POST /v1/payment_intents", ())), Mismatch)

    def test_release_lets_the_next_request_run(self) -> None:
        store = IdempotencyStore(retention_s=10)
        reservation = store.claim("sk", "k", self.FINGERPRINT)
        assert isinstance(reservation, Reservation)
        store.release(reservation)
        assert isinstance(store.claim("sk", "k", self.FINGERPRINT), Reservation)

    def test_keys_expire_after_retention(self) -> None:
        now = [0.0]
        store = IdempotencyStore(retention_s=10, clock=lambda: now[0])
        for key in ("a", "b"):
            claim = store.claim("sk", key, self.FINGERPRINT)
            assert isinstance(claim, Reservation)
            store.complete(claim, StoredResponse(200, key.encode()))
        now[0] = 9.0
        assert isinstance(store.claim("sk", "a", self.FINGERPRINT), Replay)
        now[0] = 10.5
        assert isinstance(store.claim("sk", "a", self.FINGERPRINT), Reservation)
        assert len(store) == 1

    async def test_waiter_wakes_when_the_first_request_completes(self) -> None:
        store = IdempotencyStore(retention_s=10)
        reservation = store.claim("sk", "k", self.FINGERPRINT)
        waiting = store.claim("sk", "k", self.FINGERPRINT)
        assert isinstance(reservation, Reservation) and isinstance(waiting, InFlight)
        waiter = asyncio.create_task(waiting.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        store.complete(reservation, StoredResponse(402, b"{}"))
        await asyncio.wait_for(waiter, 1)


class TestFaults:
    def test_partial_updates_merge(self) -> None:
        faults = Faults().merged({"latency_ms": 5}).merged({"error_rate": 0.5})
        assert (faults.latency_ms, faults.error_rate) == (5, 0.5)
        assert faults.timeout_after_charge_hold_ms == 30_000

    @pytest.mark.parametrize(
        "update",
        [
            {"nope": 1},
            {"error_rate": -0.1},
            {"error_rate": float("nan")},
            {"error_rate": True},
            {"latency_ms": 1.5},
            {"webhook_reorder": "yes"},
            "latency_ms",
        ],
    )
    def test_bad_updates_are_refused(self, update: object) -> None:
        with pytest.raises(FaultsError):
            Faults().merged(update)


class TestSearch:
    def test_parses_stripe_syntax(self) -> None:
        query = search.parse(
            "metadata['payment_id']:'p\\'1' AND status:'succeeded' AND amount>=100"
        )
        assert query.payment_id == "p'1"
        assert [c.field for c in query.clauses] == ["metadata", "status", "amount"]
        assert search.parse('metadata["payment_id"]:"x" OR currency:"EUR"').payment_id is None
        assert search.parse("-status:'canceled'").clauses[0].negated

    @pytest.mark.parametrize(
        "text",
        [
            "status:'a' AND currency:'usd' OR amount:1",
            "status:'a' and currency:'usd'",
            "amount:'ten'",
            "status>'a'",
            "metadata[payment_id]:'x'",
            " ",
        ],
    )
    def test_rejects_malformed_queries(self, text: str) -> None:
        with pytest.raises(search.SearchSyntaxError):
            search.parse(text)


class TestForms:
    def test_create_intent_reads_brackets_and_booleans(self) -> None:
        pairs = forms.parse_form(
            b"amount=100&currency=EUR&confirm=true&payment_method=pm_card_visa"
            b"&metadata[payment_id]=p1&payment_method_types[0]=card&automatic_payment_methods[enabled]=false"
        )
        cmd = forms.create_intent(pairs, "k")
        assert (cmd.amount, cmd.currency, cmd.confirm) == (100, "eur", True)
        assert cmd.metadata == {"payment_id": "p1"}

    def test_confirm_needs_a_payment_method(self) -> None:
        with pytest.raises(StripeApiError) as caught:
            forms.create_intent([("amount", "1"), ("currency", "usd"), ("confirm", "true")], None)
        assert caught.value.param == "payment_method"

    def test_search_page_tokens(self) -> None:
        params = forms.search_params({"query": "status:'succeeded'", "page": forms.page_token(7)})
        assert params.before_seq == 7
        with pytest.raises(StripeApiError):
            forms.search_params({"query": "status:'succeeded'", "page": "garbage"})
        with pytest.raises(StripeApiError):
            forms.search_params({"query": "status:'succeeded'", "limit": "101"})


class TestSettings:
    def test_defaults(self) -> None:
        settings = SimSettings.from_env({})
        assert (settings.host, settings.port, settings.api_key) == ("127.0.0.1", 12111, None)
        assert settings.idempotency_retention_s == 86400
        assert settings.webhook_config() == WebhookConfig(
            url=None,
            secret="whsec_dev",
            retry_initial_ms=1000,
            retry_max_ms=60_000,
            max_attempts=25,
            timeout_ms=10_000,
            concurrency=16,
        )
        assert settings.seed is None

    def test_reads_webhook_environment(self) -> None:
        settings = SimSettings.from_env(
            {
                "PROVIDER_SIM_WEBHOOK_URL": "http://127.0.0.1:8080/webhooks/stripe",
                "PROVIDER_SIM_WEBHOOK_SECRET": "whsec_abc",
                "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "10",
                "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS": "100",
                "PROVIDER_SIM_WEBHOOK_MAX_ATTEMPTS": "3",
                "PROVIDER_SIM_WEBHOOK_TIMEOUT_MS": "500",
                "PROVIDER_SIM_WEBHOOK_CONCURRENCY": "4",
                "PROVIDER_SIM_SEED": "42",
            }
        )
        assert settings.webhook_config() == WebhookConfig(
            "http://127.0.0.1:8080/webhooks/stripe", "whsec_abc", 10, 100, 3, 500, 4
        )
        assert settings.seed == 42

    def test_reads_environment(self) -> None:
        settings = SimSettings.from_env(
            {
                "PROVIDER_SIM_HOST": "0.0.0.0",
                "PROVIDER_SIM_PORT": "9000",
                "PROVIDER_SIM_API_KEY": "sk_test_abc",
                "PROVIDER_SIM_IDEMPOTENCY_RETENTION_S": "60",
            }
        )
        assert (settings.host, settings.port, settings.api_key) == ("0.0.0.0", 9000, "sk_test_abc")
        assert settings.idempotency_retention_s == 60

    @pytest.mark.parametrize(
        "env",
        [
            {"PROVIDER_SIM_PORT": "http"},
            {"PROVIDER_SIM_PORT": "70000"},
            {"PROVIDER_SIM_API_KEY": "pk_test_abc"},
            {"PROVIDER_SIM_IDEMPOTENCY_RETENTION_S": "0"},
            {"PROVIDER_SIM_WEBHOOK_URL": "localhost:8080"},
            {"PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "fast"},
            {"PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "0"},
            {
                "PROVIDER_SIM_WEBHOOK_RETRY_MAX_MS": "500",
                "PROVIDER_SIM_WEBHOOK_RETRY_INITIAL_MS": "900",
            },
            {"PROVIDER_SIM_WEBHOOK_MAX_ATTEMPTS": "0"},
            {"PROVIDER_SIM_WEBHOOK_TIMEOUT_MS": "-1"},
            {"PROVIDER_SIM_WEBHOOK_CONCURRENCY": "0"},
            {"PROVIDER_SIM_SEED": "x"},
        ],
    )
    def test_bad_values_fail_clearly(self, env: dict[str, str]) -> None:
        with pytest.raises(SettingsError, match="PROVIDER_SIM_"):
            SimSettings.from_env(env)


class TestRefundsAndDisputes:
    def test_partial_then_full_refund(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command(idempotency_key="k1"))
        first = ledger.refund(
            CreateRefund(payment_intent=intent.id, amount=200, reason="duplicate")
        )
        assert (first.amount, first.charge, first.reason) == (
            200,
            intent.latest_charge,
            "duplicate",
        )
        with pytest.raises(AmountTooLarge) as too_much:
            ledger.refund(CreateRefund(charge=intent.latest_charge, amount=301))
        assert (too_much.value.amount, too_much.value.remaining) == (301, 300)
        rest = ledger.refund(CreateRefund(charge=intent.latest_charge, idempotency_key="k2"))
        assert (rest.amount, intent.amount_refunded) == (300, 500)
        with pytest.raises(AlreadyRefunded):
            ledger.refund(CreateRefund(payment_intent=intent.id))
        with pytest.raises(AlreadyRefunded):
            ledger.dispute(intent.id)
        refunded = [e for e in ledger.events if e["type"] == EventType.CHARGE_REFUNDED]
        charges = [e["data"]["object"] for e in refunded]
        assert [(c["amount_refunded"], c["refunded"]) for c in charges] == [
            (200, False),
            (500, True),
        ]
        assert {c["metadata"]["payment_id"] for c in charges} == {"pay_1"}
        assert [e["request"]["idempotency_key"] for e in refunded] == [None, "k2"]
        assert ledger.refund_by_id(rest.id) is rest

    def test_dispute_takes_what_is_left_and_blocks_refunds(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command())
        ledger.refund(CreateRefund(payment_intent=intent.id, amount=100))
        dispute = ledger.dispute(intent.id)
        assert (dispute.amount, dispute.reason, intent.disputed) == (400, "fraudulent", True)
        assert ledger.events[-1]["type"] == EventType.CHARGE_DISPUTE_CREATED
        assert ledger.events[-1]["data"]["object"] == dispute.to_json()
        with pytest.raises(AlreadyDisputed):
            ledger.dispute(intent.id)
        with pytest.raises(ChargeDisputed):
            ledger.refund(CreateRefund(payment_intent=intent.id, amount=1))
        assert intent.to_ledger_json()["disputed"] is True
        assert charge_json(intent)["disputed"] is True

    def test_only_a_succeeded_charge_is_reversed(self) -> None:
        ledger = make_ledger()
        processing = ledger.create(command("pm_card_processing"))
        declined = ledger.create(command("pm_card_chargeDeclined"))
        for intent in (processing, declined):
            with pytest.raises(NotSucceeded):
                ledger.refund(CreateRefund(payment_intent=intent.id))
            with pytest.raises(NotSucceeded):
                ledger.dispute(intent.id)
        assert charge_json(processing)["status"] == "pending"
        other = ledger.create(command())
        with pytest.raises(ChargeMismatch):
            ledger.refund(CreateRefund(payment_intent=processing.id, charge=other.latest_charge))
        with pytest.raises(ChargeNotFound):
            ledger.refund(CreateRefund(charge="ch_nope"))
        with pytest.raises(IntentNotFound):
            ledger.dispute("pi_nope")
        assert [e["type"] for e in ledger.events if e["type"].startswith("charge.")] == []

    def test_expanded_intent_carries_its_charge(self) -> None:
        ledger = make_ledger()
        intent = ledger.create(command())
        unconfirmed = ledger.create(command(confirm=False))
        assert intent_json(intent)["latest_charge"] == intent.latest_charge
        assert intent_json(intent, expand_charge=True)["latest_charge"] == charge_json(intent)
        assert intent_json(unconfirmed, expand_charge=True)["latest_charge"] is None
        assert ledger.by_charge(str(intent.latest_charge)) is intent

    def test_forms_for_refunds_and_expand(self) -> None:
        refund = forms.create_refund(
            [("charge", "ch_1"), ("amount", "5"), ("metadata[a]", "b")], "k"
        )
        assert (refund.charge, refund.amount, dict(refund.metadata)) == ("ch_1", 5, {"a": "b"})
        for pairs, param in [
            ([("amount", "5")], "payment_intent"),
            ([("charge", "ch_1"), ("amount", "-1")], "amount"),
            ([("charge", "ch_1"), ("reason", "why")], "reason"),
        ]:
            with pytest.raises(StripeApiError) as caught:
                forms.create_refund(pairs, None)
            assert caught.value.param == param
        assert forms.expands_charge({"expand[0]": "latest_charge"}, forms.EXPAND_INTENT)
        assert not forms.expands_charge({"limit": "3"}, forms.EXPAND_INTENTS)
        with pytest.raises(StripeApiError):
            forms.expands_charge({"expand[]": "latest_charge"}, forms.EXPAND_INTENTS)
        listing = forms.intent_list_params({"created[gte]": "5", "created[lt]": "9", "limit": "7"})
        assert (listing.created, listing.limit) == (CreatedRange(gte=5, lt=9), 7)
