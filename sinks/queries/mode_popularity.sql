-- Seed 000: which practice modes are used: completed sessions and distinct learners per
-- mode, over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    practice_mode_id,
    count() AS sessions,
    uniqExact(user_id) AS learners
FROM events
WHERE event_type = 'session_completed'
  AND practice_mode_id != ''
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY practice_mode_id
ORDER BY sessions DESC, practice_mode_id
