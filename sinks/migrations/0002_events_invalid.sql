-- Every rejected event: the raw input exactly as received and why it was refused.
-- Keyed by its position in the dead-letter topic, which is unique per dead letter.
CREATE TABLE IF NOT EXISTS {db}.events_invalid
(
    received_at      DateTime64(3, 'UTC'),
    source           LowCardinality(String) COMMENT 'collector, or the processor that could not decode it',
    raw              String,
    errors           String COMMENT 'JSON [{field, message}]',
    error_fields     Array(String),
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDate(received_at) + toIntervalDay(365)
SETTINGS non_replicated_deduplication_window = 10000;
