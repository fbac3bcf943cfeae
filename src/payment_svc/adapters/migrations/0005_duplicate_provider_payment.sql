-- DUPLICATE_PROVIDER_PAYMENT: a second provider payment carrying one of our
-- payment ids (domain/binding.py). The list also admits the other kind
-- reserved with it (UNPROCESSABLE_PROVIDER_EVENT), so that the migrations
-- adding either leave both allowed in whichever order they run.
ALTER TABLE discrepancies DROP CONSTRAINT IF EXISTS discrepancies_kind_check;
ALTER TABLE discrepancies ADD CONSTRAINT discrepancies_kind_check CHECK (kind IN (
    'STUCK_PAYMENT', 'UNRECORDED_PROVIDER_PAYMENT', 'MISSING_AT_PROVIDER',
    'AMOUNT_MISMATCH', 'FINAL_STATE_CONTRADICTED', 'UNMATCHED_PROVIDER_EVENT',
    'DUPLICATE_PROVIDER_PAYMENT', 'UNPROCESSABLE_PROVIDER_EVENT'));
