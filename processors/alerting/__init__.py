"""Alert rules over metric points: evaluation (pure), the engine that feeds it, webhook delivery."""

from pathlib import Path

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
"""The rules `llmwatch up` judges unless LLMWATCH_ALERTS__RULES_FILE names a file (here, so that readers of
the rules need not import the engine and its HTTP client)."""
