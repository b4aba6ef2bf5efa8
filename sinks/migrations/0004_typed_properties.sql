-- Properties analysts filter and group by all the time, as typed columns (the full
-- properties stay in the JSON column). drill_ids: a session_completed carries scores
-- for several drills.
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS is_correct Nullable(Bool) AFTER duration_seconds,
    ADD COLUMN IF NOT EXISTS topic_id String DEFAULT '' AFTER is_correct,
    ADD COLUMN IF NOT EXISTS practice_mode_id LowCardinality(String) DEFAULT '' AFTER topic_id,
    ADD COLUMN IF NOT EXISTS drill_ids Array(String) AFTER practice_mode_id;
