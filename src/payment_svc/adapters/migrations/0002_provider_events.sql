-- The inbox of provider events (webhooks and the reconciler's catch-up).
-- Keyed by the provider's event id: a redelivery finds its row and is
-- acknowledged without being applied again.
CREATE TABLE provider_events (
    provider_event_id   text        PRIMARY KEY,
    event_type          text        NOT NULL,
    -- the object the event is about (pi_... for payment intents)
    provider_object_id  text,
    -- our payment id from the object's metadata, when it carries one
    metadata_payment_id text,
    provider_created_at timestamptz,
    payload             jsonb       NOT NULL,
    source              text        NOT NULL CHECK (source IN ('webhook', 'reconciler')),
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- NULL while no payment matches; matched again as payments appear
    payment_id          uuid        REFERENCES payments (id),
    matched_at          timestamptz,
    applied             boolean,
    -- the last time the upkeep tried to match it (oldest attempts go first)
    match_attempted_at  timestamptz,
    -- set once the event was reported as unmatched past its deadline
    unmatched_reported_at timestamptz
);

CREATE INDEX provider_events_unmatched ON provider_events (match_attempted_at NULLS FIRST)
    WHERE payment_id IS NULL AND unmatched_reported_at IS NULL;

-- Ordering of provider events: the newest provider state applied, as
-- (time at the provider, rank of the state). See domain/provider_events.py.
ALTER TABLE payments ADD COLUMN provider_state_rank smallint;
