"""Kafka: the Faust app factory and its transport, the embedded broker, and topic creation."""
