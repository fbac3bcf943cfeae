"""What we know about Stripe, once: payload shapes and event types, the status
mapping (the REVERSED rule of a snapshot), signature verification, the SDK client
and the one provider-error table. Used by payment_svc, webhook_gateway and the
reconciler; imports none of them (provider_sim keeps its own on purpose)."""
