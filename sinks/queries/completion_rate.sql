-- Seed 000: sessions started vs completed per learner, over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    user_id,
    countIf(event_type IN ('session_start', 'session_started')) AS started,
    countIf(event_type IN ('session_end', 'session_ended', 'session_completed')) AS completed,
    if(started > 0, round(completed / started * 100, 2), 0) AS completion_rate_pct
FROM events
WHERE user_id != ''
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY user_id
ORDER BY user_id
