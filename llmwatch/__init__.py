"""llmwatch: watch LLMs in production and close the loop from what users see to a better model."""

__version__ = "0.1.0"
