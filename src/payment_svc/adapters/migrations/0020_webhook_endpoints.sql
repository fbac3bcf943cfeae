-- Signed webhooks to callers (SPEC §3d). payment-svc owns these tables;
-- webhook-dispatcher reaches them only through WebhookDispatchService.
-- New tables only: no lock on a table the service already uses.

-- A client's endpoints. The secret is the key's bytes (bytea: the text
-- codec's card-number redactor never touches it); the previous secret signs
-- beside it until previous_secret_expires_at (a rotation).
CREATE TABLE webhook_endpoints (
    id                          uuid        PRIMARY KEY,
    client_id                   text        NOT NULL,
    url                         text        NOT NULL CHECK (length(url) <= 2048),
    description                 text        NOT NULL DEFAULT ''
                                            CHECK (length(description) <= 500),
    status                      text        NOT NULL CHECK (status IN
                                    ('ENABLED', 'DISABLED', 'DISABLED_GONE', 'DISABLED_FAILING')),
    secret                      bytea       NOT NULL CHECK (length(secret) BETWEEN 24 AND 64),
    previous_secret             bytea,
    previous_secret_expires_at  timestamptz,
    -- The endpoint's durable cursor: every update of its client up to this
    -- feed position is queued (webhook_queue) or done with.
    feed_position               bigint      NOT NULL,
    -- Which dispatcher replica serves the endpoint, until when.
    lease_owner                 text,
    lease_until                 timestamptz,
    -- The first failed attempt since the last delivered one (5 days of
    -- failure disable the endpoint).
    failing_since               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_client ON webhook_endpoints (client_id, created_at, id);
CREATE INDEX webhook_endpoints_enabled ON webhook_endpoints (lease_until) WHERE status = 'ENABLED';

-- Updates queued for an endpoint and not delivered or given up yet. Per
-- payment, only the lowest position is sent (commit order): the next waits
-- until that row is gone.
CREATE TABLE webhook_queue (
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    position        bigint      NOT NULL,
    update_id       uuid        NOT NULL,
    payment_id      uuid        NOT NULL,
    -- when the update committed (the age of the oldest undelivered one)
    recorded_at     timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, position)
);
CREATE INDEX webhook_queue_payment ON webhook_queue (endpoint_id, payment_id, position);

-- Every attempt, for ListWebhookDeliveries.
CREATE TABLE webhook_attempts (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id  uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    update_id    uuid        NOT NULL,
    position     bigint      NOT NULL,
    payment_id   uuid        NOT NULL,
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    http_status  integer     NOT NULL DEFAULT 0,
    error        text        NOT NULL DEFAULT '',
    duration_ms  integer     NOT NULL DEFAULT 0,
    delivered    boolean     NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempted_at DESC, id DESC);
