"""ClickHouse: connecting and migrating, the one store thread, the batching writer, the window reads, SQL."""
