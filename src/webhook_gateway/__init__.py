"""webhook-gateway: verifies provider webhooks and forwards each one to payment-svc.

    POST /webhooks/stripe
      app.py        read the body (bounded)            -> 413 body_too_large
      (payments_stripe.signature) Stripe-Signature      -> 400 missing_header, malformed_header,
                                                              no_matching_signature,
                                                              timestamp_outside_tolerance
      events.py     parse the verified body            -> not an event: forwarded as it is,
                                                          for payment-svc's quarantine
      forwarder.py  one ApplyProviderEvent call        -> 200 once payment-svc recorded it
                                                          (or quarantined it),
                                                          503 when it could not (provider retries),
                                                          400 when it refuses the event
    GET /healthz /readyz /metrics

The gateway stops at verify, parse, forward: what an event means is payment-svc's business.
"""
