"""The operator CLI (console script `payments`): the merchant and operator
commands over the client library; development commands load payments_dev lazily."""
