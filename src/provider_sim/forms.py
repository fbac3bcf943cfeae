"""Stripe's form-encoded and query-string parameters, turned into typed commands.

The SDK encodes nested values with brackets (`metadata[payment_id]=...`,
`payment_method_types[0]=card`) and booleans as `true`/`false`. Parameters the
simulator does not model are tolerated and ignored (they still take part in the
idempotency comparison, which uses the raw pairs). Invalid values raise a 400
StripeApiError naming the `param`, as Stripe does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from provider_sim import search
from provider_sim.errors import StripeApiError
from provider_sim.events import EventListQuery
from provider_sim.ledger import CreateIntent, CreateRefund
from provider_sim.listing import CreatedRange
from provider_sim.refunds import REFUND_REASONS

FormPairs = list[tuple[str, str]]

MAX_AMOUNT: Final = 99_999_999
MAX_METADATA_KEYS: Final = 50
MAX_SEARCH_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 100
CANCELLATION_REASONS: Final = frozenset(
    {"duplicate", "fraudulent", "requested_by_customer", "abandoned"}
)
# The provider cancels on its own for reasons the API does not accept from a caller.
PROVIDER_CANCELLATION_REASONS: Final = CANCELLATION_REASONS | {"automatic", "failed_invoice"}
_CURRENCY: Final = re.compile(r"[A-Za-z]{3}")
_PAGE: Final = re.compile(r"page_(\d{1,18})")
_TYPES_PARAM: Final = re.compile(r"types\[\d*\]")
_CREATED_PARAM: Final = re.compile(r"created\[(gt|gte|lt|lte)\]")
_EXPAND_PARAM: Final = re.compile(r"expand\[\d*\]")
# What can be expanded: on one intent, and on the intents of a list or search result.
EXPAND_INTENT: Final = "latest_charge"
EXPAND_INTENTS: Final = "data.latest_charge"


@dataclass(frozen=True, slots=True)
class SearchParams:
    query: search.SearchQuery
    limit: int
    # Results continue with intents older than this ledger sequence number.
    before_seq: int | None
    expand_charge: bool = False


@dataclass(frozen=True, slots=True)
class IntentListParams:
    created: CreatedRange
    limit: int
    starting_after: str | None
    ending_before: str | None
    expand_charge: bool = False


def parse_form(body: bytes) -> FormPairs:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise StripeApiError.invalid("The request body must be UTF-8 form data.") from None
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=1000)
    except ValueError as exc:
        raise StripeApiError.invalid(f"Invalid form body: {exc}.") from None


def create_intent(pairs: Sequence[tuple[str, str]], idempotency_key: str | None) -> CreateIntent:
    params: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("metadata"):
            _metadata_entry(name, value, metadata)
        else:
            params[name] = value
    payment_method = params.get("payment_method") or None
    confirm = _boolean(params, "confirm")
    if confirm and payment_method is None:
        raise StripeApiError.invalid(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            param="payment_method",
            code="parameter_missing",
        )
    description = params.get("description") or None
    if description is not None and len(description) > 1000:
        raise StripeApiError.invalid(
            "description must be at most 1000 characters.", param="description"
        )
    return CreateIntent(
        amount=_amount(params),
        currency=_currency(params),
        payment_method=payment_method,
        confirm=confirm,
        description=description,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )


def cancellation_reason(pairs: Sequence[tuple[str, str]]) -> str | None:
    reason = dict(pairs).get("cancellation_reason") or None
    if reason is not None and reason not in CANCELLATION_REASONS:
        raise StripeApiError.invalid(
            "Invalid cancellation_reason: must be one of "
            + ", ".join(sorted(CANCELLATION_REASONS)),
            param="cancellation_reason",
        )
    return reason


def create_refund(pairs: Sequence[tuple[str, str]], idempotency_key: str | None) -> CreateRefund:
    params: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("metadata"):
            _metadata_entry(name, value, metadata)
        else:
            params[name] = value
    payment_intent = params.get("payment_intent") or None
    charge = params.get("charge") or None
    if payment_intent is None and charge is None:
        raise StripeApiError.invalid(
            "One of `charge` or `payment_intent` is required.",
            param="payment_intent",
            code="parameter_missing",
        )
    amount = None
    if params.get("amount"):
        amount = _integer(params["amount"], "amount")
        if not 1 <= amount <= MAX_AMOUNT:
            raise StripeApiError.invalid(
                f"Refund amount must be from 1 to {MAX_AMOUNT} in the smallest currency unit.",
                param="amount",
                code="parameter_invalid_integer",
            )
    reason = params.get("reason") or None
    if reason is not None and reason not in REFUND_REASONS:
        raise StripeApiError.invalid(
            "Invalid reason: must be one of " + ", ".join(sorted(REFUND_REASONS)),
            param="reason",
        )
    return CreateRefund(
        payment_intent=payment_intent,
        charge=charge,
        amount=amount,
        reason=reason,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )


def expands_charge(query: Mapping[str, str], allowed: str) -> bool:
    """Whether `expand[]` asks for the intent's charge (`allowed` names it); anything
    else cannot be expanded here (nor, for the most part, on Stripe)."""
    expand = False
    for name, value in query.items():
        if name != "expand" and not _EXPAND_PARAM.fullmatch(name):
            continue
        if value != allowed:
            raise StripeApiError.invalid(
                f"This property cannot be expanded ({value}). Expandable here: {allowed}.",
                param="expand",
            )
        expand = True
    return expand


def intent_list_params(query: Mapping[str, str]) -> IntentListParams:
    """`GET /v1/payment_intents`: created[gt|gte|lt|lte] (or created=t), limit,
    starting_after or ending_before, expand[]=data.latest_charge."""
    starting_after, ending_before = _cursors(query)
    return IntentListParams(
        created=_created_range(query),
        limit=_limit(query, MAX_LIST_LIMIT),
        starting_after=starting_after,
        ending_before=ending_before,
        expand_charge=expands_charge(query, EXPAND_INTENTS),
    )


@dataclass(frozen=True, slots=True)
class RefundListParams:
    created: CreatedRange
    limit: int
    payment_intent: str | None
    charge: str | None
    starting_after: str | None
    ending_before: str | None


def refund_list_params(query: Mapping[str, str]) -> RefundListParams:
    """`GET /v1/refunds`: payment_intent and/or charge, created[gt|gte|lt|lte] (or
    created=t), limit, starting_after or ending_before."""
    starting_after, ending_before = _cursors(query)
    return RefundListParams(
        created=_created_range(query),
        limit=_limit(query, MAX_LIST_LIMIT),
        payment_intent=query.get("payment_intent") or None,
        charge=query.get("charge") or None,
        starting_after=starting_after,
        ending_before=ending_before,
    )


@dataclass(frozen=True, slots=True)
class EventListParams:
    query: EventListQuery
    starting_after: str | None
    ending_before: str | None


def event_list_params(query: Mapping[str, str]) -> EventListParams:
    """`GET /v1/events`: created[gt|gte|lt|lte] (or created=t), type or types[], limit,
    starting_after or ending_before."""
    types = [
        value for name, value in query.items() if name == "type" or _TYPES_PARAM.fullmatch(name)
    ]
    limit = _limit(query, MAX_LIST_LIMIT)
    starting_after, ending_before = _cursors(query)
    return EventListParams(
        EventListQuery(_created_range(query), tuple(types), limit), starting_after, ending_before
    )


def _created_range(query: Mapping[str, str]) -> CreatedRange:
    bounds: dict[str, int] = {}
    for name, value in query.items():
        created = _CREATED_PARAM.fullmatch(name)
        if created is not None:
            bounds[created.group(1)] = _integer(value, name)
        elif name == "created":
            bounds["gte"] = bounds["lte"] = _integer(value, name)
    return CreatedRange(**bounds)


def _cursors(query: Mapping[str, str]) -> tuple[str | None, str | None]:
    starting_after = query.get("starting_after") or None
    ending_before = query.get("ending_before") or None
    if starting_after is not None and ending_before is not None:
        raise StripeApiError.invalid(
            "You may only specify one of these parameters: starting_after, ending_before.",
            param="ending_before",
        )
    return starting_after, ending_before


def search_params(query: Mapping[str, str]) -> SearchParams:
    text = query.get("query")
    if text is None:
        raise StripeApiError.invalid(
            "Missing required param: query.", param="query", code="parameter_missing"
        )
    try:
        parsed = search.parse(text)
    except search.SearchSyntaxError as exc:
        raise StripeApiError.invalid(str(exc), param="query") from None
    limit = _limit(query, MAX_SEARCH_LIMIT)
    before_seq = None
    if query.get("page"):
        page = _PAGE.fullmatch(query["page"])
        if page is None:
            raise StripeApiError.invalid("Invalid page: use the next_page value.", param="page")
        before_seq = int(page.group(1))
    return SearchParams(parsed, limit, before_seq, expands_charge(query, EXPAND_INTENTS))


def _limit(query: Mapping[str, str], most: int) -> int:
    if not query.get("limit"):
        return 10
    limit = _integer(query["limit"], "limit")
    if not 1 <= limit <= most:
        raise StripeApiError.invalid(f"limit must be between 1 and {most}.", param="limit")
    return limit


def is_currency(raw: str) -> bool:
    return _CURRENCY.fullmatch(raw) is not None


def page_token(seq: int) -> str:
    return f"page_{seq}"


def _metadata_entry(name: str, value: str, metadata: dict[str, str]) -> None:
    if name == "metadata":
        if value:
            raise StripeApiError.invalid("Invalid object", param="metadata")
        return
    if not (name.startswith("metadata[") and name.endswith("]")) or len(name) == 10:
        raise StripeApiError.invalid(f"Invalid metadata parameter: {name}", param=name)
    key = name[9:-1]
    if len(key) > 40 or len(value) > 500:
        raise StripeApiError.invalid(
            "Metadata keys are limited to 40 characters and values to 500.", param=name
        )
    metadata[key] = value
    if len(metadata) > MAX_METADATA_KEYS:
        raise StripeApiError.invalid(
            f"Metadata can have at most {MAX_METADATA_KEYS} keys.", param="metadata"
        )


def _amount(params: Mapping[str, str]) -> int:
    raw = params.get("amount")
    if not raw:
        raise StripeApiError.invalid(
            "Missing required param: amount.", param="amount", code="parameter_missing"
        )
    amount = _integer(raw, "amount")
    if not 1 <= amount <= MAX_AMOUNT:
        raise StripeApiError.invalid(
            f"Amount must be from 1 to {MAX_AMOUNT} in the smallest currency unit.",
            param="amount",
            code="parameter_invalid_integer",
        )
    return amount


def _currency(params: Mapping[str, str]) -> str:
    raw = params.get("currency")
    if not raw:
        raise StripeApiError.invalid(
            "Missing required param: currency.", param="currency", code="parameter_missing"
        )
    if not is_currency(raw):
        raise StripeApiError.invalid(
            f"Invalid currency: {raw}. Currencies are three-letter ISO codes.", param="currency"
        )
    return raw.lower()


def _boolean(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise StripeApiError.invalid(f"Invalid boolean: {raw}", param=name)


def _integer(raw: str, name: str) -> int:
    if not re.fullmatch(r"-?\d{1,18}", raw):
        raise StripeApiError.invalid(
            f"Invalid integer: {raw}", param=name, code="parameter_invalid_integer"
        )
    return int(raw)
