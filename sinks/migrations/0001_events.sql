-- Accepted events, one row each. ReplacingMergeTree on a key that includes event_id
-- is the second guard against duplicates; the sink's offset bookkeeping is the first.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id         UUID,
    event_type       LowCardinality(String),
    category         LowCardinality(String),
    timestamp        DateTime64(3, 'UTC'),
    received_at      DateTime64(3, 'UTC'),
    sent_at          Nullable(DateTime64(3, 'UTC')),
    user_id          String,
    session_id       String,
    organization_id  LowCardinality(String),
    timezone         LowCardinality(String),
    content_id       String,
    course_id        String,
    score            Nullable(Float64),
    duration_seconds Nullable(Int64),
    properties       String COMMENT 'all properties as JSON',
    device_info      String COMMENT 'JSON',
    context          String COMMENT 'JSON',
    privacy_level    LowCardinality(String),
    retention_days   UInt16,
    sample_rate      Float64,
    schema_version   UInt16,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organization_id, user_id, timestamp, event_id)
-- Date, not DateTime: DateTime ends in 2106 and an overflowing TTL wraps into the
-- past, expiring rows at once. Date reaches 2149; retention_days is capped at 30 years.
TTL toDate(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
