"""HTTP intake: validate, enrich, and publish events durably to Kafka."""
