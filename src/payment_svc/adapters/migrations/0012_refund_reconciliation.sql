-- Reconciliation of refunds (issue 13): the refund discrepancy kinds, and the
-- refund a finding is about.
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
    'DUPLICATE_PROVIDER_PAYMENT', 'UNPROCESSABLE_PROVIDER_EVENT',
    'UNRECORDED_PROVIDER_REFUND', 'REFUND_AMOUNT_MISMATCH', 'STUCK_REFUND',
    'REFUND_MISSING_AT_PROVIDER'));

ALTER TABLE discrepancies ADD COLUMN refund_id uuid REFERENCES refunds (id);

