-- Seed 000: blind spots: each learner's three drills with the lowest average score in
-- completed sessions over the days before as_of (ties: drill_id).
-- params: days UInt32 = 30; as_of Date = today
SELECT
    user_id,
    drill_id,
    min(drill_name) AS drill_name,
    round(avg(score), 1) AS avg_score,
    count() AS attempts
FROM
(
    SELECT
        user_id,
        arrayJoin(JSONExtractArrayRaw(properties, 'scores')) AS entry,
        JSONExtractString(entry, 'drill_id') AS drill_id,
        JSONExtractString(entry, 'drill_name') AS drill_name,
        JSONExtractFloat(entry, 'score') AS score
    FROM events
    WHERE event_type = 'session_completed'
      AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
      AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
)
GROUP BY user_id, drill_id
ORDER BY user_id, avg(score), drill_id
LIMIT 3 BY user_id
