-- Seed 003's language sessions (session_result) are completed study sessions too, as the
-- learner projections count them: the daily view counts them and their duration_seconds.
-- A materialized view cannot be altered in place; the sink runs migrations before it
-- consumes, so no insert falls between the drop and the create. Rows stored before this
-- migration keep the counts they were given.
DROP VIEW IF EXISTS {db}.daily_user_stats_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_user_stats_mv TO {db}.daily_user_stats AS
SELECT
    organization_id,
    user_id,
    toDate(timestamp) AS day,
    sum(1 / sample_rate) AS events,
    countIf(event_type IN ('session_start', 'session_started')) AS sessions_started,
    countIf(event_type IN ('session_end', 'session_ended', 'session_completed', 'session_result'))
        AS sessions_completed,
    sumIf(
        if(event_type = 'session_completed',
           JSONExtractInt(properties, 'total_duration'),
           JSONExtractInt(properties, 'duration_seconds')),
        event_type IN ('session_end', 'session_ended', 'session_completed', 'session_result'))
        AS study_seconds,
    countIf(event_type = 'question_submit') AS questions_answered,
    countIf(event_type = 'question_submit' AND is_correct) AS questions_correct,
    countIf(event_type = 'lesson_completed') AS lessons_completed,
    countIf(event_type = 'material_open') AS materials_opened,
    sumIf(JSONExtractInt(properties, 'xp_amount'), event_type = 'xp_earned') AS xp_earned
FROM {db}.events
WHERE user_id != ''
GROUP BY organization_id, user_id, day;
