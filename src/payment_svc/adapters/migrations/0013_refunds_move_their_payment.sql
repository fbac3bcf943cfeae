-- A payment and its refunds are one aggregate (issue 13): any change of a
-- refund's state or amount moves its payment's version, whoever writes it
-- (an answer to RefundPayment, a webhook, the reconciler, a statement yet to
-- be written), in the refund's own transaction. A write planned on one read
-- of the payment and its refunds can then be conditional on the payment
-- alone (adapters/refund_store.py: RefundStore's *_unless_moved statements):
-- two concurrent refunds can never both be admitted against the same
-- remaining amount.
-- A transaction that already updated the payment row (its version moved
-- with it: the conditional statements' guard, a reversal) does not move it
-- twice: one new row version a statement, not two.
CREATE FUNCTION refunds_move_their_payment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payments SET version = version + 1
    WHERE id = NEW.payment_id AND xmin <> pg_current_xact_id()::xid;
    RETURN NULL;
END $$;

CREATE TRIGGER refunds_move_their_payment
    AFTER INSERT OR UPDATE OF status, amount ON refunds
    FOR EACH ROW
    EXECUTE FUNCTION refunds_move_their_payment();
