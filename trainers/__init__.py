"""LoRA retraining from ClickHouse data, evaluation gate and lineage (built by a later issue)."""
