"""Prometheus metrics of payment-svc.

The gRPC metrics use go-grpc-prometheus's names and labels, so existing
dashboards and alerts work unchanged. No library instruments grpc.aio servers
this way (py-grpc-prometheus is for the sync server and misses cancelled and
deadline-exceeded calls), so the interceptor in interceptors.py does it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter(
    "grpc_server_started_total", "Total number of RPCs started on the server.", _LABELS
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_LABELS, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GRPC_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "Total number of RPC stream messages received.", _LABELS
)
GRPC_MSG_SENT = Counter(
    "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent.", _LABELS
)

PAYMENTS_CREATED = Counter(
    "payments_created_total",
    "CreatePayment outcomes: the status the call returned, or why it returned none.",
    ("outcome",),
)
REFUNDS = Counter(
    "payments_refunds_total",
    "RefundPayment outcomes: the refund status the call returned, or why it returned none "
    "(the error's reason, lower case).",
    ("outcome",),
)
for _outcome in ("succeeded", "pending", "unknown", "failed"):
    REFUNDS.labels(_outcome)  # exported at 0 from the start, for rate()
REVERSALS_UNDONE = Counter(
    "payments_reversals_undone_total",
    "Refunds counted as money given back that the provider then failed: their amount left "
    "amount_reversed (and a payment REVERSED by them went back to SUCCEEDED). Each one is "
    "money the customer did not get back: alerted.",
    ("source",),
)
for _source in ("webhook", "reconciler"):
    REVERSALS_UNDONE.labels(_source)  # exported at 0 from the start, for increase()
DATABASE_UP = Gauge("payments_database_up", "1 when the last database call or probe succeeded.")
UNMATCHED_EVENTS = Gauge(
    "payments_unmatched_provider_events",
    "Provider events in the inbox that match no payment (yet).",
)
PROVIDER_EVENTS = Counter(
    "payments_provider_events_total",
    "Provider events received through ApplyProviderEvent, by source and outcome.",
    ("source", "outcome"),
)
QUARANTINED_EVENTS = Counter(
    "payments_quarantined_provider_events_total",
    "Verified provider events that could not be understood or stored: quarantined "
    "(UNPROCESSABLE_PROVIDER_EVENT), acknowledged, never applied. Redeliveries count.",
    ("source",),
)
for _source in ("webhook", "reconciler"):
    QUARANTINED_EVENTS.labels(_source)  # exported at 0 from the start, for rate()
UNEXPECTED_ERRORS = Counter(
    "payments_unexpected_errors_total",
    "Calls that ended in an exception no rule mapped (answered INTERNAL): each is a bug.",
    ("grpc_method",),
)

FEED_UPDATES_SEQUENCED = Counter(
    "payments_feed_updates_total",
    "Change-feed updates written and numbered (counted when the sequencer of this process "
    "numbered them, so the sum over processes is the feed's rate).",
)
FEED_STREAMS_OPEN = Gauge("payments_feed_streams_open", "WatchPaymentUpdates streams open.")
FEED_DELIVERY_LAG = Histogram(
    "payments_feed_delivery_lag_seconds",
    "From the commit of the oldest update of a stream's message (its outbox row's "
    "recorded_at) to the message's send: one observation a message sent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
FEED_LISTENER_UP = Gauge(
    "payments_feed_listener_up", "1 while this process's change-feed LISTEN connection is up."
)
