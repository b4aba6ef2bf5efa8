-- What the collector learns about the sender: the truncated network (never a whole
-- address), the client's own timestamp when clock-skew correction moved it, and
-- which write key a dead letter came with.
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS client_ip String DEFAULT '' COMMENT 'IPv4 /24 or IPv6 /48 network, or empty' AFTER organization_id,
    ADD COLUMN IF NOT EXISTS original_timestamp Nullable(DateTime64(3, 'UTC')) COMMENT 'client timestamp before skew correction' AFTER timestamp;

ALTER TABLE {db}.events_invalid
    ADD COLUMN IF NOT EXISTS key_id LowCardinality(String) DEFAULT '' COMMENT 'non-secret name of the write key' AFTER source;
