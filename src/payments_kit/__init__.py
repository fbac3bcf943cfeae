"""The services' shared kit: logging with the one card-number redactor, the process
runtime, configuration parsing, and the rules that packages which may not import
each other must apply alike (cards.py: the card-number rule; reversal.py: the
REVERSED rule). Imports no service (import-linter, pyproject.toml)."""
