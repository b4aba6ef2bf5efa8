-- Dashboard: the topic-mastery heatmap: P(mastered) per learner and topic, for the
-- learners with the most topics and the topics with the most learners (ties: by id).
-- params: learners UInt32 = 20; topics UInt32 = 20
SELECT
    user_id,
    topic_id,
    round(p_mastery, 3) AS p_mastery,
    mastered
FROM topic_mastery_current
WHERE user_id IN
    (
        SELECT user_id FROM topic_mastery_current
        GROUP BY user_id ORDER BY count() DESC, user_id LIMIT {learners:UInt32}
    )
  AND topic_id IN
    (
        SELECT topic_id FROM topic_mastery_current
        GROUP BY topic_id ORDER BY count() DESC, topic_id LIMIT {topics:UInt32}
    )
ORDER BY user_id, topic_id
