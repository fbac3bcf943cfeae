-- The change feed's outbox (SPEC §3b): one row per change that moved a payment
-- (status, amount_reversed) or a refund, written in the transaction of the
-- change. Columns id, aggregatetype, aggregateid, type and payload are those
-- of Debezium's outbox event router (README: Change feed), so the table can be
-- published to Kafka without a code change.
CREATE TABLE payment_updates (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL DEFAULT 'payment',
    -- the payment id: Debezium's key, so one payment's updates share a partition
    aggregateid   text        NOT NULL,
    -- payment.<status>, payment.amount_reversed, refund.<status>
    type          text        NOT NULL,
    -- the update: the payment (and refund) as they stood at the change's
    -- commit, and the history entry that recorded it
    payload       jsonb       NOT NULL,
    client_id     text        NOT NULL,
    payment_id    uuid        NOT NULL,
    event_id      bigint      NOT NULL,
    refund_id     uuid,
    -- the order of inserts: two changes of one payment are serialized by its
    -- row lock, so their rows are in this order
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    -- the cursor: NULL until the sequencer (adapters/feed_store.py) numbers
    -- the committed rows; readers read only numbered rows, by position
    position      bigint      UNIQUE,
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- a client's updates after a cursor
CREATE INDEX payment_updates_client_position ON payment_updates (client_id, position)
    WHERE position IS NOT NULL;
-- the sequencer's work: committed rows without a position yet
CREATE INDEX payment_updates_unsequenced ON payment_updates (seq) WHERE position IS NULL;

-- One row: the last position handed out (the sequencer locks this row, so one
-- sequencer runs at a time, whichever process) and the retention horizon (the
-- highest position deleted: a cursor below it has expired).
CREATE TABLE payment_updates_state (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    last_position bigint      NOT NULL DEFAULT 0,
    horizon       bigint      NOT NULL DEFAULT 0
);
INSERT INTO payment_updates_state DEFAULT VALUES;

-- Every applied history entry that changed the payment's status or
-- amount_reversed, or a refund (an entry recorded but not applied, such as a
-- stale provider event, changed nothing), writes its update, whoever wrote the entry
-- (API, webhook, reconciler, refunds). An applied entry that keeps the status
-- changed amount_reversed when the payment is SUCCEEDED or REVERSED (only
-- reversals move those without a new status); one that keeps PENDING only
-- recorded "still processing" (domain/feed.py: is_feed_change). Deferred to the commit: the payload is the payment and the refund
-- as the transaction leaves them, whatever the order of its statements.
CREATE FUNCTION payment_updates_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    p payments%ROWTYPE;
    r refunds%ROWTYPE;
    kind text;
BEGIN
    SELECT * INTO p FROM payments WHERE id = NEW.payment_id;
    IF NEW.refund_id IS NOT NULL THEN
        SELECT * INTO r FROM refunds WHERE id = NEW.refund_id;
        kind := 'refund.' || lower(COALESCE(NEW.refund_status, r.status));
    ELSIF NEW.from_status IS NOT DISTINCT FROM NEW.to_status THEN
        kind := 'payment.amount_reversed';
    ELSE
        kind := 'payment.' || lower(NEW.to_status);
    END IF;
    INSERT INTO payment_updates (aggregateid, type, payload, client_id, payment_id, event_id,
                                 refund_id)
    VALUES (
        p.id::text,
        kind,
        jsonb_build_object(
            'payment', to_jsonb(p) - 'request_fingerprint' - 'reconcile_lease_owner'
                - 'reconcile_lease_until' - 'provider_state_at' - 'provider_state_rank',
            'event', to_jsonb(NEW),
            'refund', CASE WHEN NEW.refund_id IS NULL THEN NULL
                ELSE to_jsonb(r) - 'request_fingerprint' - 'reconcile_lease_owner'
                    - 'reconcile_lease_until' - 'provider_state_at' - 'provider_state_rank' END
        ),
        p.client_id, p.id, NEW.id, NEW.refund_id
    );
    -- Tells the writing process, at no extra round trip and without NOTIFY's
    -- commit-wide lock, that its commit has updates to sequence
    -- (adapters/db.py). Once per transaction.
    IF current_setting('payment_updates.told', true) IS DISTINCT FROM '1' THEN
        PERFORM set_config('payment_updates.told', '1', true);
        RAISE NOTICE 'payment_updates_written';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER payment_updates_write
    AFTER INSERT ON payment_events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.applied AND (
        NEW.refund_id IS NOT NULL
        OR NEW.from_status IS DISTINCT FROM NEW.to_status
        OR NEW.to_status IN ('SUCCEEDED', 'REVERSED')))
    EXECUTE FUNCTION payment_updates_write();
