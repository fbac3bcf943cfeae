"""Payments platform: shared client, CLI and the generated `payments.v1` protocol."""
