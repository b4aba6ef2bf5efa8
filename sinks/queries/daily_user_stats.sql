-- Seed 001: daily_user_stats: per UTC day and learner, over the days before as_of;
-- user = * for everyone. events is weighted by 1 / sample_rate.
-- params: days UInt32 = 30; as_of Date = today; user String = *
SELECT
    day,
    user_id,
    round(sum(events), 2) AS events,
    sum(sessions_started) AS sessions_started,
    sum(sessions_completed) AS sessions_completed,
    sum(study_seconds) AS study_seconds,
    sum(questions_answered) AS questions_answered,
    sum(questions_correct) AS questions_correct,
    sum(lessons_completed) AS lessons_completed,
    sum(materials_opened) AS materials_opened,
    sum(xp_earned) AS xp_earned
FROM daily_user_stats
WHERE day >= {as_of:Date} - toIntervalDay({days:UInt32}) AND day <= {as_of:Date}
  AND ({user:String} = '*' OR user_id = {user:String})
GROUP BY day, user_id
ORDER BY day, user_id
