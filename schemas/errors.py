"""One root exception so callers (and the CLI) can tell our failures from bugs.

Every message says what the user can do about it.
"""


class LlmwatchError(Exception):
    """Root of every error llmwatch raises on purpose."""


class ConfigurationError(LlmwatchError):
    """A setting is missing or wrong; fix the LLMWATCH_* environment or .env file."""


class BrokerError(LlmwatchError):
    """The Kafka broker could not be started or reached."""


class StoreError(LlmwatchError):
    """ClickHouse refused a statement or could not be reached."""


class StoreUnavailableError(StoreError):
    """ClickHouse is unreachable right now: retrying later may succeed."""


class ServingError(LlmwatchError):
    """vLLM or the gateway could not be started, or its model could not be prepared."""
