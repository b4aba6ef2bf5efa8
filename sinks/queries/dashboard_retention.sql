-- Dashboard: weekly cohort retention. A learner's cohort is the week (from Monday, UTC) of
-- their first active day up to as_of; for each cohort of the last weeks weeks, the
-- learners active in each week since, and that as a share of the cohort (week 0 is 1).
-- params: weeks UInt32 = 8; as_of Date = today
SELECT
    cohort,
    intDiv(dateDiff('day', cohort, week), 7) AS week_offset,
    count() AS learners,
    max(count()) OVER (PARTITION BY cohort) AS cohort_size,
    round(learners / cohort_size, 4) AS retained
FROM
(
    SELECT
        user_id,
        week,
        min(week) OVER (PARTITION BY user_id) AS cohort
    FROM
    (
        SELECT DISTINCT user_id, toMonday(day) AS week
        FROM daily_user_stats
        WHERE day <= {as_of:Date}
    )
)
WHERE cohort > toMonday({as_of:Date}) - toIntervalWeek({weeks:UInt32})
GROUP BY cohort, week_offset
ORDER BY cohort, week_offset
