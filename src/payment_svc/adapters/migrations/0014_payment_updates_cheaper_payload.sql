-- The change feed's trigger (0011), cheaper: each payload object drops its
-- internal columns with one `jsonb - text[]` instead of five `jsonb - text`,
-- each of which copied the whole object. The payload is the same; the
-- trigger runs on every write that moves a payment or a refund, and was
-- about half of such a statement's time in Postgres (EXPLAIN ANALYZE with
-- the constraints immediate: 0.25 of 0.44 ms for a payment's insert, 0.41
-- of 0.90 ms for a refund's). Nothing else changes: same trigger, same
-- WHEN, same NOTICE.
CREATE OR REPLACE FUNCTION payment_updates_write() RETURNS trigger
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
            'payment', to_jsonb(p) - ARRAY['request_fingerprint', 'reconcile_lease_owner',
                'reconcile_lease_until', 'provider_state_at', 'provider_state_rank'],
            'event', to_jsonb(NEW),
            'refund', CASE WHEN NEW.refund_id IS NULL THEN NULL
                ELSE to_jsonb(r) - ARRAY['request_fingerprint', 'reconcile_lease_owner',
                    'reconcile_lease_until', 'provider_state_at', 'provider_state_rank'] END
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
