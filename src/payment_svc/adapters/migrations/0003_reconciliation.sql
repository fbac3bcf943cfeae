-- Reconciliation (SPEC §7): discrepancies, runs, checkpoints, leases.
CREATE TABLE discrepancies (
    id                  uuid        PRIMARY KEY,
    kind                text        NOT NULL CHECK (kind IN (
        'STUCK_PAYMENT', 'UNRECORDED_PROVIDER_PAYMENT', 'MISSING_AT_PROVIDER',
        'AMOUNT_MISMATCH', 'FINAL_STATE_CONTRADICTED', 'UNMATCHED_PROVIDER_EVENT')),
    payment_id          uuid        REFERENCES payments (id),
    provider_payment_id text,
    details             jsonb       NOT NULL DEFAULT '{}',
    -- one open finding per (kind, payment, provider payment): repeats count up
    dedup_key           text        NOT NULL,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    occurrences         bigint      NOT NULL DEFAULT 1,
    resolved_at         timestamptz,
    resolved_by         text,
    note                text
);

CREATE UNIQUE INDEX discrepancies_open_once ON discrepancies (dedup_key)
    WHERE resolved_at IS NULL;
CREATE INDEX discrepancies_newest ON discrepancies (first_seen_at DESC, id DESC);

CREATE TABLE reconciliation_runs (
    id             uuid        PRIMARY KEY,
    job            text        NOT NULL,
    reconciler_id  text        NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    scanned        bigint      NOT NULL,
    fixed          bigint      NOT NULL,
    discrepancies  bigint      NOT NULL,
    errors         bigint      NOT NULL,
    succeeded      boolean     NOT NULL,
    error_message  text
);

CREATE INDEX reconciliation_runs_latest ON reconciliation_runs (job, finished_at DESC);

CREATE TABLE checkpoints (
    name       text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A reconciler claims the payments it is fixing, so that replicas share the
-- sweep and no payment is fixed by two at once.
ALTER TABLE payments
    ADD COLUMN reconcile_lease_owner text,
    ADD COLUMN reconcile_lease_until timestamptz;
