-- Seed 001: topic_daily_stats: per UTC day and topic, over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today
SELECT
    day,
    topic_id,
    sum(questions_answered) AS questions_answered,
    sum(questions_correct) AS questions_correct,
    sum(materials_opened) AS materials_opened,
    uniqMerge(learners) AS learners
FROM topic_daily_stats
WHERE day >= {as_of:Date} - toIntervalDay({days:UInt32}) AND day <= {as_of:Date}
GROUP BY day, topic_id
ORDER BY day, topic_id
