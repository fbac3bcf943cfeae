-- Payments and their history (SPEC §3, §4).
CREATE TABLE payments (
    id                  uuid        PRIMARY KEY,
    client_id           text        NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint bytea       NOT NULL,
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    status              text        NOT NULL
        CHECK (status IN ('PENDING', 'UNKNOWN', 'SUCCEEDED', 'FAILED', 'REVERSED')),
    payment_method      text        NOT NULL,
    description         text        NOT NULL DEFAULT '',
    metadata            jsonb       NOT NULL DEFAULT '{}',
    provider_payment_id text        UNIQUE,
    failure_code        text,
    failure_message     text,
    amount_reversed     bigint      NOT NULL DEFAULT 0 CHECK (amount_reversed >= 0),
    -- optimistic concurrency: every change bumps it
    version             integer     NOT NULL DEFAULT 1,
    -- when the newest provider state applied happened at the provider
    provider_state_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- keys are unique per client, for the life of the payment
    CONSTRAINT payments_client_idempotency_key UNIQUE (client_id, idempotency_key)
);

-- ListPayments: newest first, keyset on (created_at, id) within a client
CREATE INDEX payments_client_created ON payments (client_id, created_at DESC, id DESC);
-- the reconciler's sweep: non-final payments by age
CREATE INDEX payments_non_final ON payments (updated_at, id)
    WHERE status IN ('PENDING', 'UNKNOWN');

CREATE TABLE payment_events (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id          uuid        NOT NULL REFERENCES payments (id),
    from_status         text,
    to_status           text        NOT NULL,
    source              text        NOT NULL CHECK (source IN ('api', 'webhook', 'reconciler')),
    -- false: recorded in the history but did not move the payment
    applied             boolean     NOT NULL,
    provider_event_id   text,
    provider_event_type text,
    failure_code        text,
    note                text,
    provider_created_at timestamptz,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_events_payment ON payment_events (payment_id, id);
