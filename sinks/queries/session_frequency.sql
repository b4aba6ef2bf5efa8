-- Seed 000: completed practice sessions per week per learner, over the weeks before as_of.
-- params: weeks UInt32 = 4; as_of Date = today
SELECT
    user_id,
    count() AS sessions,
    round(count() / {weeks:UInt32}, 2) AS sessions_per_week
FROM events
WHERE event_type = 'session_completed'
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalWeek({weeks:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY user_id
ORDER BY user_id
