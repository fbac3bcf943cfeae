-- An operator's correction (`payments correct`, domain/corrections.py) is a
-- history entry of its own source. The check is widened, never narrowed:
-- NOT VALID takes the table's lock for an instant (every row already holds),
-- and every new row is checked all the same.
ALTER TABLE payment_events
    DROP CONSTRAINT payment_events_source_check,
    ADD CONSTRAINT payment_events_source_check
        CHECK (source IN ('api', 'webhook', 'reconciler', 'operator')) NOT VALID;
