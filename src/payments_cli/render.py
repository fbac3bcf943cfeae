"""What the CLI shows: payments, their history, reconciliation runs and
discrepancies, and errors, as rich tables for people or as JSON for machines
(protobuf's JSON mapping, enum names)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from rich.text import Text

from payments.errors import PaymentsClientError
from payments.v1 import payment_pb2 as pb
from payments.v1 import provider_sync_service_pb2 as sync
from payments.v1 import webhooks_pb2 as wh

_STATUS_STYLE = {
    pb.PAYMENT_STATUS_SUCCEEDED: "green",
    pb.PAYMENT_STATUS_FAILED: "red",
    pb.PAYMENT_STATUS_UNKNOWN: "yellow",
    pb.PAYMENT_STATUS_PENDING: "cyan",
    pb.PAYMENT_STATUS_REVERSED: "magenta",
}

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)
if not stdout.is_terminal:
    # Piped or captured: no terminal width to fit, so tables keep whole ids.
    stdout.width = 200


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_json_line(value: object) -> None:
    """One object a line, flushed: a stream others read as it comes."""
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def update(u: pb.PaymentUpdate) -> None:
    """One line a change: when, the payment, its status (and amount reversed),
    what caused it, the refund if one changed, and the cursor to resume after."""
    e = u.event
    line = Text()
    line.append(_time(u, "recorded_at") + "  ")
    line.append(u.payment.id + "  ")
    line.append(status_text(u.payment.status))
    if u.payment.amount_reversed:
        line.append(f" reversed {u.payment.amount_reversed}")
    source = pb.PaymentEventSource.Name(e.source).removeprefix("PAYMENT_EVENT_SOURCE_").lower()
    line.append(f"  {source}")
    if e.provider_event_type:
        line.append(f" {e.provider_event_type}")
    if u.refund.id:
        refund = pb.RefundStatus.Name(u.refund.status).removeprefix("REFUND_STATUS_")
        line.append(f"  refund {u.refund.id} {refund}")
    line.append(f"  cursor {u.cursor}", style="dim")
    stdout.print(line, soft_wrap=True)


def status_text(status: pb.PaymentStatus.ValueType) -> Text:
    name = pb.PaymentStatus.Name(status).removeprefix("PAYMENT_STATUS_")
    return Text(name, style=_STATUS_STYLE.get(status, ""))


def _time(message: Message, name: str) -> str:
    """UTC, to the millisecond (tables say so in their headers)."""
    if not message.HasField(name):
        return ""
    value: Timestamp = getattr(message, name)
    return value.ToDatetime(tzinfo=UTC).isoformat(sep=" ", timespec="milliseconds")[:23]


def payment(p: pb.Payment) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", p.id),
        ("status", status_text(p.status)),
        ("amount", f"{p.amount} {p.currency} (minor units)"),
        ("payment method", p.payment_method),
        ("description", p.description),
        ("idempotency key", p.idempotency_key),
        ("provider id", p.provider_payment_id),
        ("failure", " ".join(filter(None, [p.failure_code, p.failure_message]))),
        ("reversed", str(p.amount_reversed) if p.amount_reversed else ""),
        ("metadata", ", ".join(f"{k}={v}" for k, v in sorted(p.metadata.items()))),
        ("created (UTC)", _time(p, "created_at")),
        ("updated (UTC)", _time(p, "updated_at")),
    ]
    for label, value in rows:
        if value:
            # Text, not markup: values are the caller's data ("[x]" stays "[x]").
            table.add_row(label, value if isinstance(value, Text) else Text(value))
    stdout.print(table)


def payments(items: Sequence[pb.Payment], next_page_token: str) -> None:
    table = Table()
    for name in ("id", "status", "amount", "method", "created (UTC)", "failure"):
        table.add_column(name, no_wrap=name != "failure")
    table.columns[2].justify = "right"
    for p in items:
        table.add_row(
            p.id,
            status_text(p.status),
            f"{p.amount} {p.currency}",
            Text(p.payment_method),
            _time(p, "created_at"),
            Text(p.failure_code),
        )
    stdout.print(table)
    if next_page_token:
        stdout.print(Text(f"next page: --page-token {next_page_token}"), soft_wrap=True)


def events(items: Sequence[pb.PaymentEvent]) -> None:
    table = Table()
    names = ["recorded (UTC)", "from", "to", "source", "applied", "provider event", "note"]
    # A refund's change is an entry of its payment's history: which refund, its new status.
    with_refunds = any(e.refund_id for e in items)
    if with_refunds:
        names.insert(5, "refund")
    for name in names:
        table.add_column(name, no_wrap=name not in ("provider event", "note", "refund"))
    for e in items:
        refund = Text(e.refund_id + " ") if e.refund_id else Text("")
        if e.refund_id:
            refund.append_text(refund_status_text(e.refund_status))
        cells = [
            _time(e, "recorded_at"),
            status_text(e.from_status) if e.from_status else "",
            status_text(e.to_status),
            pb.PaymentEventSource.Name(e.source).removeprefix("PAYMENT_EVENT_SOURCE_").lower(),
            "yes" if e.applied else "no",
            Text(" ".join(filter(None, [e.provider_event_type, e.provider_event_id]))),
            Text(" ".join(filter(None, [e.failure_code, e.note]))),
        ]
        if with_refunds:
            cells.insert(5, refund)
        table.add_row(*cells)
    stdout.print(table)


_REFUND_STYLE = {
    pb.REFUND_STATUS_SUCCEEDED: "green",
    pb.REFUND_STATUS_FAILED: "red",
    pb.REFUND_STATUS_UNKNOWN: "yellow",
    pb.REFUND_STATUS_PENDING: "cyan",
}


def refund_status_text(status: pb.RefundStatus.ValueType) -> Text:
    name = pb.RefundStatus.Name(status).removeprefix("REFUND_STATUS_")
    return Text(name, style=_REFUND_STYLE.get(status, ""))


def refund(r: pb.Refund) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", r.id),
        ("payment", r.payment_id),
        ("status", refund_status_text(r.status)),
        ("amount", f"{r.amount} {r.currency} (minor units)"),
        ("reason", r.reason),
        ("idempotency key", r.idempotency_key),
        ("provider id", r.provider_refund_id),
        ("failure", " ".join(filter(None, [r.failure_code, r.failure_message]))),
        ("created (UTC)", _time(r, "created_at")),
        ("updated (UTC)", _time(r, "updated_at")),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value if isinstance(value, Text) else Text(value))
    stdout.print(table)


def refunds(items: Sequence[pb.Refund]) -> None:
    table = Table()
    for name in ("id", "status", "amount", "reason", "provider id", "created (UTC)", "failure"):
        table.add_column(name, no_wrap=name != "failure")
    table.columns[2].justify = "right"
    for r in items:
        table.add_row(
            r.id,
            refund_status_text(r.status),
            f"{r.amount} {r.currency}",
            Text(r.reason),
            Text(r.provider_refund_id),
            _time(r, "created_at"),
            Text(r.failure_code),
        )
    stdout.print(table)


def kind_text(kind: sync.DiscrepancyKind.ValueType) -> str:
    return sync.DiscrepancyKind.Name(kind).removeprefix("DISCREPANCY_KIND_")


def _details(d: sync.Discrepancy) -> Text:
    # a finding about a refund names it first
    refund = [("refund", d.refund_id)] if d.refund_id else []
    return Text(", ".join(f"{k}={v}" for k, v in [*refund, *sorted(d.details.items())]))


def discrepancies(items: Sequence[sync.Discrepancy], next_page_token: str) -> None:
    table = Table()
    for name in ("id", "kind", "payment", "provider id", "seen", "last seen (UTC)", "details"):
        table.add_column(name, no_wrap=name not in ("details",))
    table.columns[4].justify = "right"
    for d in items:
        kind = Text(kind_text(d.kind), style="dim" if d.HasField("resolved_at") else "red")
        table.add_row(
            d.id,
            kind,
            d.payment_id,
            Text(d.provider_payment_id),
            str(d.occurrences),
            _time(d, "last_seen_at"),
            _details(d),
        )
    stdout.print(table)
    if next_page_token:
        stdout.print(Text(f"next page: --page-token {next_page_token}"), soft_wrap=True)


def discrepancy(d: sync.Discrepancy) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", d.id),
        ("kind", kind_text(d.kind)),
        ("payment", d.payment_id),
        ("refund", d.refund_id),
        ("provider id", d.provider_payment_id),
        ("details", _details(d)),
        ("occurrences", str(d.occurrences)),
        ("first seen (UTC)", _time(d, "first_seen_at")),
        ("last seen (UTC)", _time(d, "last_seen_at")),
        ("resolved (UTC)", _time(d, "resolved_at")),
        ("resolved by", d.resolved_by),
        ("note", d.note),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value if isinstance(value, Text) else Text(value))
    stdout.print(table)


def reconciliation_runs(runs: Sequence[dict[str, Any]]) -> None:
    """One row per job run (reconciler.runs.RunReport.to_json())."""
    table = Table()
    for name in ("job", "result", "scanned", "fixed", "discrepancies", "errors", "seconds"):
        table.add_column(
            name, no_wrap=True, justify="left" if name in ("job", "result") else "right"
        )
    table.add_column("error", overflow="fold")
    for run in runs:
        ok = bool(run["succeeded"])
        table.add_row(
            str(run["job"]),
            Text("ok" if ok else "failed", style="green" if ok else "red"),
            str(run["scanned"]),
            str(run["fixed"]),
            str(run["discrepancies"]),
            str(run["errors"]),
            f"{run['seconds']:.2f}",
            Text(str(run["error_message"])),
        )
    stdout.print(table)


def error_dict(exc: PaymentsClientError) -> dict[str, Any]:
    return {
        "code": exc.code.name,
        "reason": exc.reason,
        "message": exc.message,
        "retryable": exc.retryable,
        "metadata": exc.metadata,
        "field_violations": [{"field": f, "description": d} for f, d in exc.field_violations],
        "request_id": exc.request_id,
    }


def error(exc: PaymentsClientError, *, as_json: bool) -> None:
    if as_json:
        sys.stderr.write(json.dumps({"error": error_dict(exc)}, indent=2) + "\n")
        return
    head = Text("error: ", style="bold red")
    head.append(exc.code.name)
    if exc.reason and exc.reason != exc.code.name:
        head.append(f" ({exc.reason})")
    lines = [head]
    # The server's message of a bad request only lists its violations again.
    if exc.message and not exc.field_violations:
        lines.append(Text(f"  {exc.message}"))
    lines += [Text(f"  {field}: {description}") for field, description in exc.field_violations]
    lines += [Text(f"  {key} = {value}") for key, value in sorted(exc.metadata.items())]
    if exc.retryable:
        delay = f" after {exc.retry_delay:g}s" if exc.retry_delay else ""
        lines.append(Text(f"  a retry may help{delay}", style="yellow"))
    if exc.request_id:
        lines.append(Text(f"  request id {exc.request_id}", style="dim"))
    for line in lines:
        stderr.print(line, soft_wrap=True)


def quarantined(items: Sequence[sync.QuarantinedEvent]) -> None:
    table = Table()
    for name in ("id", "event", "type", "source", "deliveries", "received (UTC)", "reason"):
        table.add_column(name, no_wrap=name != "reason")
    table.columns[4].justify = "right"
    for q in items:
        reason = Text(q.reason, style="dim" if q.HasField("replayed_at") else "red")
        table.add_row(
            q.id,
            Text(q.provider_event_id),
            Text(q.event_type),
            q.source,
            str(q.deliveries),
            _time(q, "received_at"),
            reason,
        )
    stdout.print(table)


def replayed(reply: sync.ReplayQuarantinedEventResponse) -> None:
    outcome = reply.outcome
    if reply.still_quarantined:
        stdout.print(Text(f"still unprocessable: {reply.event.reason}", style="red"))
        return
    what = "applied" if outcome.applied else "duplicate" if outcome.duplicate else "recorded"
    stdout.print(Text(f"replayed: {what} {outcome.payment_id or '(no payment matched yet)'}"))


def endpoint_status_text(status: wh.WebhookEndpointStatus.ValueType) -> Text:
    name = wh.WebhookEndpointStatus.Name(status).removeprefix("WEBHOOK_ENDPOINT_STATUS_")
    return Text(name, style="green" if status == wh.WEBHOOK_ENDPOINT_STATUS_ENABLED else "red")


def endpoint(e: wh.WebhookEndpoint) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", e.id),
        ("url", e.url),
        ("description", e.description),
        ("status", endpoint_status_text(e.status)),
        ("secret", e.secret),
        ("previous secret until (UTC)", _time(e, "previous_secret_expires_at")),
        ("created (UTC)", _time(e, "created_at")),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value if isinstance(value, Text) else Text(value))
    stdout.print(table)
    if e.secret:
        stderr.print("The secret is shown only now: keep it (payments.client.verify_webhook).")


def endpoints(items: Sequence[wh.WebhookEndpoint]) -> None:
    table = Table()
    for name in ("id", "status", "url", "description", "created (UTC)"):
        table.add_column(name, no_wrap=name in ("id", "status"), overflow="fold")
    for e in items:
        table.add_row(
            e.id,
            endpoint_status_text(e.status),
            Text(e.url),
            Text(e.description),
            _time(e, "created_at"),
        )
    stdout.print(table)


def deliveries(items: Sequence[wh.WebhookDelivery], next_page_token: str) -> None:
    table = Table()
    for name in ("attempted (UTC)", "update", "payment", "attempt", "result", "ms", "cursor"):
        table.add_column(name, no_wrap=True)
    for d in items:
        result = Text(
            f"{d.http_status or ''} {d.error}".strip() or "-",
            style="green" if d.delivered else "red",
        )
        table.add_row(
            _time(d, "attempted_at"),
            d.update_id,
            d.payment_id,
            str(d.attempt),
            result,
            str(d.duration.ToMilliseconds()),
            Text(d.cursor),
        )
    stdout.print(table)
    if next_page_token:
        stdout.print(f"next page: --page-token {next_page_token}")
