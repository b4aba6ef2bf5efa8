-- Seed 001: knowledge gaps: topics a learner answered at least min_attempts questions
-- on, with accuracy below max_accuracy_pct, over the days before as_of.
-- params: days UInt32 = 30; as_of Date = today; min_attempts UInt32 = 3; max_accuracy_pct UInt32 = 60
SELECT
    user_id,
    topic_id,
    count() AS attempts,
    countIf(is_correct) AS correct,
    round(correct / attempts * 100, 1) AS accuracy_pct
FROM events
WHERE event_type = 'question_submit'
  AND topic_id != ''
  AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
  AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
GROUP BY user_id, topic_id
HAVING attempts >= {min_attempts:UInt32} AND correct * 100 < {max_accuracy_pct:UInt32} * attempts
ORDER BY user_id, accuracy_pct, topic_id
