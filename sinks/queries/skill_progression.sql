-- Seed 000: skill progression: drill scores from completed sessions, per week (Monday)
-- and practice mode, over the days before as_of; user = * for everyone.
-- params: days UInt32 = 90; as_of Date = today; user String = *
SELECT
    toMonday(timestamp) AS week,
    practice_mode_id,
    uniqExact(event_id) AS sessions,
    count() AS drill_scores,
    round(avg(score), 1) AS avg_score,
    uniqExact(user_id) AS learners
FROM
(
    SELECT
        timestamp,
        practice_mode_id,
        event_id,
        user_id,
        arrayJoin(arrayMap(s -> JSONExtractFloat(s, 'score'),
                           JSONExtractArrayRaw(properties, 'scores'))) AS score
    FROM events
    WHERE event_type = 'session_completed'
      AND practice_mode_id != ''
      AND ({user:String} = '*' OR user_id = {user:String})
      AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
      AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
)
GROUP BY week, practice_mode_id
ORDER BY week, practice_mode_id
