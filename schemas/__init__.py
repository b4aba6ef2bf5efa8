"""Avro schemas, the registry interface, Confluent-framed encode/decode, validation."""
