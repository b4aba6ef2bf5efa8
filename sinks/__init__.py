"""Kafka -> ClickHouse: migrations, exactly-once batched inserts, and the analysts' query door."""
