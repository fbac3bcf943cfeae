-- Refunds (SPEC §3a): asked for by callers (RefundPayment) or made at the
-- provider directly (then recorded from its events, without a key).
CREATE TABLE refunds (
    id                  uuid        PRIMARY KEY,
    payment_id          uuid        NOT NULL REFERENCES payments (id),
    client_id           text        NOT NULL,
    -- NULL for a refund made at the provider directly
    idempotency_key     text,
    request_fingerprint bytea,
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    status              text        NOT NULL
        CHECK (status IN ('PENDING', 'UNKNOWN', 'SUCCEEDED', 'FAILED')),
    reason              text        NOT NULL DEFAULT '',
    source              text        NOT NULL CHECK (source IN ('api', 'webhook', 'reconciler')),
    provider_refund_id  text        UNIQUE,
    failure_code        text,
    failure_message     text,
    -- every change bumps it
    version             integer     NOT NULL DEFAULT 1,
    -- the newest provider state applied, as for payments (domain/provider_events.py)
    provider_state_at   timestamptz,
    provider_state_rank smallint,
    -- the reconciler's claim, as for payments
    reconcile_lease_owner text,
    reconcile_lease_until timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- keys are unique per client among refunds, for the life of the refund
    CONSTRAINT refunds_client_idempotency_key UNIQUE (client_id, idempotency_key)
);

-- ListRefunds: a payment's refunds, oldest first
CREATE INDEX refunds_payment ON refunds (payment_id, created_at, id);
-- the reconciler's sweep: non-final refunds by age
CREATE INDEX refunds_non_final ON refunds (updated_at, id)
    WHERE status IN ('PENDING', 'UNKNOWN');

-- What was disputed, apart from what was refunded: amount_reversed is
-- their sum (succeeded refunds + disputes).
ALTER TABLE payments ADD COLUMN amount_disputed bigint NOT NULL DEFAULT 0
    CHECK (amount_disputed >= 0);

-- A refund's state change is an entry of its payment's history.
ALTER TABLE payment_events
    ADD COLUMN refund_id     uuid REFERENCES refunds (id),
    ADD COLUMN refund_status text
        CHECK (refund_status IN ('PENDING', 'UNKNOWN', 'SUCCEEDED', 'FAILED'));
