-- Dashboard: daily active learners: learners with any stored event on each UTC day, for
-- the days days that end with as_of; a day without activity counts 0.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    day,
    uniqExact(user_id) AS learners
FROM daily_user_stats
WHERE day > {as_of:Date} - toIntervalDay({days:UInt32}) AND day <= {as_of:Date}
GROUP BY day
ORDER BY day WITH FILL
    FROM {as_of:Date} - toIntervalDay({days:UInt32}) + toIntervalDay(1)
    TO {as_of:Date} + toIntervalDay(1)
