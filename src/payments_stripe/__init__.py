"""What we know about Stripe, once: payload shapes and event types, the status
mapping (an intent's own status, and how much refunds and disputes took back of
it; whether that is REVERSED is payments_kit/reversal.py's one rule), signature
verification, the SDK client and the one provider-error table. Used by
payment_svc, webhook_gateway and the reconciler; imports none of them
(provider_sim keeps its own on purpose)."""
