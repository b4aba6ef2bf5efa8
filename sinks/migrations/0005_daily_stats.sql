-- Daily aggregates (seed 001: daily_user_stats, topic_daily_stats), kept up to date by
-- materialized views on every insert into events. SummingMergeTree adds up rows with
-- the same key when parts merge, so read them with sum() ... GROUP BY.
-- Days are UTC dates: ClickHouse's toDate needs one constant time zone per query,
-- and a learner's own calendar lives in the projections (projections.user_progress).
-- Events are counted weighted by 1 / sample_rate (learning events are never sampled).
CREATE TABLE IF NOT EXISTS {db}.daily_user_stats
(
    organization_id     LowCardinality(String),
    user_id             String,
    day                 Date,
    events              Float64 COMMENT 'weighted by 1 / sample_rate',
    sessions_started    UInt32,
    sessions_completed  UInt32,
    study_seconds       Int64,
    questions_answered  UInt32,
    questions_correct   UInt32,
    lessons_completed   UInt32,
    materials_opened    UInt32,
    xp_earned           Int64 COMMENT 'from the derived xp_earned events'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (organization_id, user_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_user_stats_mv TO {db}.daily_user_stats AS
SELECT
    organization_id,
    user_id,
    toDate(timestamp) AS day,
    sum(1 / sample_rate) AS events,
    countIf(event_type IN ('session_start', 'session_started')) AS sessions_started,
    countIf(event_type IN ('session_end', 'session_ended', 'session_completed')) AS sessions_completed,
    sumIf(
        if(event_type = 'session_completed',
           JSONExtractInt(properties, 'total_duration'),
           JSONExtractInt(properties, 'duration_seconds')),
        event_type IN ('session_end', 'session_ended', 'session_completed')) AS study_seconds,
    countIf(event_type = 'question_submit') AS questions_answered,
    countIf(event_type = 'question_submit' AND is_correct) AS questions_correct,
    countIf(event_type = 'lesson_completed') AS lessons_completed,
    countIf(event_type = 'material_open') AS materials_opened,
    sumIf(JSONExtractInt(properties, 'xp_amount'), event_type = 'xp_earned') AS xp_earned
FROM {db}.events
WHERE user_id != ''
GROUP BY organization_id, user_id, day;

CREATE TABLE IF NOT EXISTS {db}.topic_daily_stats
(
    organization_id     LowCardinality(String),
    topic_id            String,
    day                 Date,
    -- plain columns in an AggregatingMergeTree keep one row's value on merge; these sum
    questions_answered  SimpleAggregateFunction(sum, UInt64),
    questions_correct   SimpleAggregateFunction(sum, UInt64),
    materials_opened    SimpleAggregateFunction(sum, UInt64),
    learners            AggregateFunction(uniq, String) COMMENT 'uniqMerge(learners)'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (organization_id, topic_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.topic_daily_stats_mv TO {db}.topic_daily_stats AS
SELECT
    organization_id,
    topic_id,
    toDate(timestamp) AS day,
    countIf(event_type = 'question_submit') AS questions_answered,
    countIf(event_type = 'question_submit' AND is_correct) AS questions_correct,
    countIf(event_type = 'material_open') AS materials_opened,
    uniqState(user_id) AS learners
FROM {db}.events
WHERE topic_id != ''
GROUP BY organization_id, topic_id, day;
