"""Kafka (`kafka/`) and ClickHouse (`store/`), the settings, process helpers, and the publisher SDK.

`publisher.py` and `settings.py` import neither Faust nor the store: apps that only publish events
install `llmwatch` without extras.
"""
