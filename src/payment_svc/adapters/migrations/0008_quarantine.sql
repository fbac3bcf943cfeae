-- Validly signed provider events that could not be understood or stored as
-- events (hostile or broken contents: NaN, NUL, lone surrogates, nesting,
-- numbers out of range...). Acknowledged so the provider stops retrying,
-- reported as UNPROCESSABLE_PROVIDER_EVENT, replayable once the code is fixed.
CREATE TABLE quarantined_provider_events (
    id                uuid        PRIMARY KEY,
    -- sha256 of the bytes as received: a redelivery counts, not a new row
    payload_sha256    text        NOT NULL UNIQUE,
    -- the raw body with card numbers redacted (bytes: it may not be text)
    payload           bytea       NOT NULL,
    -- when they could be read (bounded, redacted)
    provider_event_id text,
    event_type        text,
    reason            text        NOT NULL,
    source            text        NOT NULL CHECK (source IN ('webhook', 'reconciler')),
    received_at       timestamptz NOT NULL DEFAULT now(),
    last_received_at  timestamptz NOT NULL DEFAULT now(),
    deliveries        bigint      NOT NULL DEFAULT 1,
    replayed_at       timestamptz
);

CREATE INDEX quarantined_provider_events_newest
    ON quarantined_provider_events (received_at DESC, id DESC);

-- The discrepancy kinds: every CHECK naming them is replaced by one listing
-- all (DUPLICATE_PROVIDER_PAYMENT included, whichever migration added it).
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'discrepancies'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%STUCK_PAYMENT%'
    LOOP
        EXECUTE format('ALTER TABLE discrepancies DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;

ALTER TABLE discrepancies ADD CONSTRAINT discrepancies_kind_check CHECK (kind IN (
    'STUCK_PAYMENT', 'UNRECORDED_PROVIDER_PAYMENT', 'MISSING_AT_PROVIDER',
    'AMOUNT_MISMATCH', 'FINAL_STATE_CONTRADICTED', 'UNMATCHED_PROVIDER_EVENT',
    'DUPLICATE_PROVIDER_PAYMENT', 'UNPROCESSABLE_PROVIDER_EVENT'));
