-- Dashboard: each learner's XP, level and streaks (current and longest, in days), most XP
-- first, from the current user_progress projection.
-- params: limit UInt32 = 50
SELECT
    user_id,
    xp,
    level,
    current_streak,
    longest_streak,
    last_active_date
FROM user_progress_current
ORDER BY xp DESC, user_id
LIMIT {limit:UInt32}
