-- Seed 000: average length of a completed practice session (total_duration, seconds),
-- per learner, over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    user_id,
    count() AS sessions,
    round(avg(JSONExtractInt(properties, 'total_duration')), 1) AS avg_session_seconds
FROM events
WHERE event_type = 'session_completed'
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY user_id
ORDER BY user_id
