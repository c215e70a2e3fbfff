"""Errors a user can fix. The CLI prints them as one line and exits with their code."""


class PrefstreamError(Exception):
    """A problem with the user's input or environment; the message says what to fix."""

    exit_code = 2


class StoreError(PrefstreamError):
    """The DuckDB file cannot be opened, created or migrated."""


class BrokerError(PrefstreamError):
    """The Kafka broker cannot be reached or refused the request."""


class GateFailed(PrefstreamError):
    """The quality gate failed; exports refuse to proceed without --force."""

    exit_code = 1


class TokenizerError(PrefstreamError):
    """The model's tokenizer or chat template cannot encode the data (no pad/EOS token, a template that refuses it)."""
