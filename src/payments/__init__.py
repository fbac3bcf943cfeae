"""Payments platform protocol and client library: the generated `payments.v1`,
the typed client (`payments.client`) and its error tree (`payments.errors`)."""
