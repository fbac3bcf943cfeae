"""webhook-dispatcher: posts each client's feed updates, signed, to its endpoints (SPEC 3d)."""
