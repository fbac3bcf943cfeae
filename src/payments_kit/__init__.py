"""The services' shared kit: logging with the one card-number redactor, the process
runtime, configuration parsing. Imports no service (import-linter, pyproject.toml)."""
