-- Seed 000: user engagement: completed sessions per learner, the days they were active,
-- and the mean time between consecutive sessions (hours), over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    user_id,
    count() AS sessions,
    uniqExact(toDate(timestamp)) AS active_days,
    if(count() > 1,
       round(dateDiff('second', min(timestamp), max(timestamp)) / (count() - 1) / 3600, 2),
       NULL) AS avg_hours_between_sessions
FROM events
WHERE event_type = 'session_completed'
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY user_id
ORDER BY user_id
